"""Kafka consumers: decode (the runner), apply to the read model, then the runner commits.

Every apply is an idempotent guarded upsert, so a redelivered batch changes nothing. A
payload without the ids it is keyed by can never be applied: it is dead-lettered. Forensic
data chunks are stored by the forensic data use case (idempotent too); an invalid chunk is
dead-lettered with its reason.
"""

from __future__ import annotations

from typing import Any

from tmsp.events.v1 import accounts_pb2, incidents_pb2, products_pb2, status_pb2
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_reporter.adapters.convert import forensic_file, ts
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.domain.forensics import InvalidChunk
from tmsp_reporter.service_layer.forensics import ForensicData


def _require(event: ConsumedEvent[Any], **ids: str) -> None:
    missing = [name for name, value in ids.items() if not value]
    if missing:
        raise InvalidEvent(event, f"invalid: {', '.join(missing)} missing")


class ProjectionHandler:
    """Every consumed topic into the read model, in partition order."""

    def __init__(self, read: ReadModel, forensics: ForensicData) -> None:
        self.read = read
        self.forensics = forensics

    async def __call__(self, events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            await self.apply(event)

    async def apply(self, event: ConsumedEvent[Any]) -> None:
        p = event.payload
        at = from_timestamp(event.envelope.occurred_at)
        if isinstance(p, accounts_pb2.AccountSnapshot):
            _require(event, account_id=p.account_id)
            await self.read.apply_account(p, at)
        elif isinstance(p, products_pb2.ProductSnapshot):
            _require(event, product_id=p.product_id, account_id=p.account_id)
            await self.read.apply_product(p)
        elif isinstance(p, status_pb2.UploadReceived):
            _require(event, product_id=p.product_id, account_id=p.account_id)
            await self.read.apply_upload(p, at)
        elif isinstance(p, status_pb2.Heartbeat):
            _require(event, product_id=p.product_id, account_id=p.account_id)
            await self.read.apply_heartbeat(p, at)
            if p.acknowledged_task_ids:
                await self.read.acknowledge_tasks(p, at)
        elif isinstance(p, status_pb2.MitigationTask):
            _require(event, task_id=p.task_id, product_id=p.product_id, account_id=p.account_id)
            await self.read.apply_task(p, at)
        elif isinstance(p, incidents_pb2.Incident):
            _require(event, incident_id=p.incident_id, account_id=p.account_id)
            await self.read.apply_incident(p, at)
        elif isinstance(p, incidents_pb2.IncidentCount):
            _require(event, account_id=p.account_id)
            await self.read.apply_count(p, at)
        elif isinstance(p, incidents_pb2.NonconformingEndpoint):
            _require(event, account_id=p.account_id, endpoint_key=p.endpoint_key)
            await self.read.apply_nonconforming(p, at)
        elif isinstance(p, incidents_pb2.ProductLiveness):
            _require(event, product_id=p.product_id, account_id=p.account_id)
            await self.read.apply_liveness(p, at)
        elif isinstance(p, status_pb2.ForensicDataChunk):
            try:
                await self.forensics.receive(
                    forensic_file(p),
                    p.index,
                    p.data,
                    protocol=int(p.protocol),
                    received_at=ts(p.received_at) or at,
                )
            except InvalidChunk as bad:
                raise InvalidEvent(event, bad.reason) from None

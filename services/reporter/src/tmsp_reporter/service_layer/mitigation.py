"""Threat mitigation tasks: a forensic data request or a custom cleanup pattern for one
product, put on the bus ingest hands out in heartbeat answers. Answers only once Kafka
acknowledged the task. A custom cleanup task names a pattern of the account's catalogue and
carries its SHA-256 and version, so the Threat Mitigator can check what it downloads."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from tmsp.events.v1 import products_pb2, status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import MITIGATION_TASKS
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.domain.validation import task_parameters
from tmsp_reporter.service_layer.forensics import ForensicData
from tmsp_reporter.service_layer.patterns import CleanupPatterns
from tmsp_reporter.service_layer.ports import Publisher

CLEANUP = status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN
FORENSIC = status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST


TaskState = tuple[status_pb2.MitigationTask, datetime | None, list[str]]
"""A task, when its product acknowledged it, the complete forensic uploads answering it."""


class MitigationTasks:
    def __init__(
        self,
        read: ReadModel,
        patterns: CleanupPatterns,
        forensics: ForensicData,
        publisher: Publisher,
        clock: Clock,
    ) -> None:
        self.read = read
        self.patterns = patterns
        self.forensics = forensics
        self.publisher = publisher
        self.clock = clock

    async def list(
        self,
        account_id: str,
        product_id: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[TaskState]:
        """The account's tasks, newest first, each with when its product acknowledged it
        and (forensic data requests) the complete files its product sent for it."""
        rows = await self.read.list_tasks(account_id, product_id, limit=limit, after=after)
        uploads = await self.forensics.complete_for_tasks(
            account_id, [t.task_id for t, _ in rows if t.kind == FORENSIC]
        )
        return [(t, acked, uploads.get((t.product_id, t.task_id), [])) for t, acked in rows]

    async def create(
        self,
        account_id: str,
        product_id: str,
        kind: int,
        parameters: Mapping[str, str],
        created_by: str,
    ) -> status_pb2.MitigationTask:
        if kind not in (CLEANUP, FORENSIC):
            raise InvalidArgument("kind", "forensic data request or custom cleanup pattern")
        if not product_id:
            raise InvalidArgument("product_id", "required")
        product = await self.read.product(product_id)
        if product is None or product.account_id != account_id:
            raise NotFound("product not found")
        if product.state in (products_pb2.PRODUCT_STATE_DEREGISTERED,):
            raise FailedPrecondition("the product is deregistered")
        if kind == CLEANUP and product.kind != products_pb2.PRODUCT_KIND_THREAT_MITIGATOR:
            raise FailedPrecondition("custom cleanup patterns go to a Threat Mitigator")
        params = task_parameters(parameters, cleanup=kind == CLEANUP)
        if kind == CLEANUP:
            pattern = await self.patterns.for_task(account_id, params["pattern_name"])
            params["pattern_sha256"] = pattern.content_sha256
            params["pattern_version"] = str(pattern.version)
        task = status_pb2.MitigationTask(
            task_id=f"task-{uuid.uuid4().hex}",
            account_id=account_id,
            product_id=product_id,
            kind=status_pb2.MitigationTaskKind.ValueType(kind),
            parameters=params,
            created_by_user_id=created_by,
        )
        task.created_at.CopyFrom(to_timestamp(self.clock.now()))
        await self.publisher.publish(
            MITIGATION_TASKS, task, key=product_id, account_id=account_id, event_id=task.task_id
        )
        return task

"""Kafka consumers: decode, hand to a use case, and let the runner commit afterwards.

Each handler returns only once every notification of the batch reached a final state in
the delivery log (sent, failed and dead-lettered, digested...). When it raises (the service
stops while a mail waits for a retry, MongoDB is down), the batch is not committed and
comes back; the delivery log makes that redelivery harmless.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tmsp.events.v1 import accounts_pb2, incidents_pb2, notifications_pb2
from tmsp_common.kafka.consumer import ConsumedEvent
from tmsp_common.logging import get_logger
from tmsp_notifier.adapters import convert
from tmsp_notifier.bootstrap import App
from tmsp_notifier.service_layer.ports import Origin

log = get_logger(__name__)


def _origin(event: ConsumedEvent[Any], prefix: str) -> Origin:
    return Origin(event.topic.qualified(prefix), event.partition, event.offset)


class RequestsHandler:
    """NOTIFICATION_REQUESTS: deliveries of one batch run concurrently (bounded)."""

    def __init__(self, app: App, *, prefix: str, concurrency: int, stop: asyncio.Event) -> None:
        self.app = app
        self.prefix = prefix
        self._slots = asyncio.Semaphore(concurrency)
        self.stop = stop

    async def _one(self, event: ConsumedEvent[notifications_pb2.NotificationRequest]) -> None:
        req = event.payload
        notification = convert.notification_from_request(req, event.envelope.event_id)
        origin = _origin(event, self.prefix)
        async with self._slots:
            if convert.kind_from_proto(req.kind) is None:
                await self.app.deliverer.reject(notification, "kind: unknown or unset", origin)
                return
            await self.app.deliverer.deliver_request(notification, origin=origin, stop=self.stop)

    async def __call__(self, events: list[ConsumedEvent[Any]]) -> None:
        # A producer retry can put the same id twice in one batch: delivering both at once
        # would race past the claim, so only the first of each id is delivered.
        # Requests without an id are each rejected (and dead-lettered) on their own.
        unique: dict[str, ConsumedEvent[Any]] = {}
        for e in events:
            nid = e.payload.notification_id
            unique.setdefault(nid if nid else f"\x00{e.partition}/{e.offset}", e)
        results = await asyncio.gather(
            *(self._one(e) for e in unique.values()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


class DomainEventsHandler:
    """INCIDENTS, PRODUCT_LIVENESS, NONCONFORMING_ENDPOINTS, in order."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            payload = event.payload
            event_id = event.envelope.event_id
            if isinstance(payload, incidents_pb2.Incident):
                await self.app.events.on_incident(convert.incident_view(payload), event_id)
            elif isinstance(payload, incidents_pb2.ProductLiveness):
                view = convert.liveness_view(payload)
                if view is not None:
                    await self.app.events.on_liveness(view, event_id)
            elif isinstance(payload, incidents_pb2.NonconformingEndpoint):
                await self.app.events.on_nonconforming(
                    convert.nonconforming_view(payload), event_id
                )


class AccountsHandler:
    """ACCOUNTS: the projection (administrator address, time zone, valid until)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            snapshot: accounts_pb2.AccountSnapshot = event.payload
            if snapshot.account_id:
                await self.app.deliverer.accounts.upsert(convert.account_from_snapshot(snapshot))

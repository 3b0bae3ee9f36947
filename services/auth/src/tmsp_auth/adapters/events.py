"""Publishing auth's events: account snapshots, audit events, notification requests.

Every method returns only after the broker acknowledged, so a use case answers its caller
after Kafka has the event (a code the user must receive is on the bus before we say "sent").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime

from tmsp.events.v1 import accounts_pb2, auth_pb2, notifications_pb2
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.producer import BusPublisher, EventProducer
from tmsp_common.kafka.topics import ACCOUNTS, AUTH_AUDIT, NOTIFICATION_REQUESTS
from tmsp_common.mongo import Document

AuditKind = auth_pb2.AuthAuditKind
NotificationKind = notifications_pb2.NotificationKind


def snapshot(doc: Document) -> accounts_pb2.AccountSnapshot:
    snap = accounts_pb2.AccountSnapshot(
        account_id=str(doc["_id"]),
        name=str(doc.get("name", "")),
        company_name=str(doc.get("company_name", "")),
        services=list(doc.get("services", [])),
        managed_by_user_id=str(doc.get("managed_by_user_id", "")),
        managed_by_email=str(doc.get("managed_by_email", "")),
        deleted=bool(doc.get("deleted", False)),
        time_zone=str(doc.get("time_zone", "")),
        version=int(doc.get("version", 0)),
    )
    for name in ("valid_from", "valid_until", "updated_at"):
        value = doc.get(name)
        if isinstance(value, datetime):
            getattr(snap, name).CopyFrom(to_timestamp(value))
    return snap


class EventPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = BusPublisher(producer)

    async def account_changed(self, doc: Document) -> None:
        snap = snapshot(doc)
        await self.producer.publish(
            ACCOUNTS,
            snap,
            key=snap.account_id,
            account_id=snap.account_id,
            event_id=f"{snap.account_id}:{snap.version}",
        )

    async def audit(
        self,
        kind: int,
        *,
        user_id: str = "",
        account_id: str = "",
        email: str = "",
        source_ip: str = "",
        session_id: str = "",
        detail: str = "",
    ) -> None:
        event = auth_pb2.AuthAuditEvent(
            kind=kind,  # type: ignore[arg-type]
            user_id=user_id,
            account_id=account_id,
            email=email,
            source_ip=source_ip,
            session_id=session_id,
            detail=detail,
        )
        await self.producer.publish(AUTH_AUDIT, event, key=user_id or email, account_id=account_id)

    async def notify(
        self,
        kind: int,
        *,
        account_id: str,
        recipients: Sequence[str],
        params: Mapping[str, str],
        notification_id: str | None = None,
    ) -> None:
        nid = notification_id or uuid.uuid4().hex
        request = notifications_pb2.NotificationRequest(
            notification_id=nid,
            kind=kind,  # type: ignore[arg-type]
            account_id=account_id,
            recipients=list(recipients),
            params=dict(params),
        )
        await self.producer.publish(
            NOTIFICATION_REQUESTS, request, key=nid, account_id=account_id, event_id=nid
        )

    async def all(self, *calls: Awaitable[None]) -> None:
        """Await several publications together (each already awaits its ack)."""
        await asyncio.gather(*calls)

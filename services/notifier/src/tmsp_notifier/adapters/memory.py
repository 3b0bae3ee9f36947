"""In-memory repositories and a recording sender: the fakes unit tests run against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import EmailMessage

from tmsp_common.errors import FailedPrecondition
from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import (
    AccountProfile,
    DeliveryRecord,
    DeliveryState,
    Kind,
    KindSettings,
    Notification,
)
from tmsp_notifier.service_layer.ports import DigestItem, Origin


class MemoryDeliveryLog:
    def __init__(self) -> None:
        self.records: dict[str, DeliveryRecord] = {}

    async def claim(self, record: DeliveryRecord) -> tuple[DeliveryRecord, bool]:
        stored = self.records.setdefault(record.notification_id, record)
        return stored, stored is record

    async def set_decision(
        self, notification_id: str, decision: str, window_start: datetime, now: datetime
    ) -> DeliveryRecord:
        r = self.records[notification_id]
        if not r.decision:
            r = replace(r, decision=decision, window_start=window_start, updated_at=now)
            self.records[notification_id] = r
        return r

    async def mark_sending(self, notification_id: str, now: datetime) -> DeliveryRecord | None:
        r = self.records[notification_id]
        if r.state.final:
            return None
        r = replace(r, state=DeliveryState.SENDING, attempts=r.attempts + 1, updated_at=now)
        self.records[notification_id] = r
        return r

    async def mark(
        self,
        notification_id: str,
        state: DeliveryState,
        now: datetime,
        *,
        reply: str = "",
        subject: str = "",
    ) -> None:
        r = self.records[notification_id]
        self.records[notification_id] = replace(
            r,
            state=state,
            updated_at=now,
            last_reply=reply or r.last_reply,
            subject=subject or r.subject,
            sent_at=now if state == DeliveryState.SENT else r.sent_at,
        )

    async def get(self, notification_id: str) -> DeliveryRecord | None:
        return self.records.get(notification_id)

    async def list_for_account(
        self, account_id: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[DeliveryRecord]:
        rows = [r for r in self.records.values() if r.account_id == account_id]
        rows.sort(key=lambda r: r.notification_id)
        rows.sort(key=lambda r: r.created_at, reverse=True)
        if after is not None:
            at, nid = after
            rows = [
                r
                for r in rows
                if r.created_at < at or (r.created_at == at and r.notification_id > nid)
            ]
        return rows[:limit]


class MemorySettings:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, Kind], KindSettings] = {}

    async def get(self, account_id: str, kind: Kind) -> KindSettings | None:
        return self.rows.get((account_id, kind))

    async def put(self, settings: KindSettings) -> KindSettings:
        key = (settings.account_id, settings.kind)
        stored = self.rows.get(key)
        if (stored.version if stored else 0) != settings.version:
            raise FailedPrecondition("settings changed meanwhile; reload and retry")
        new = replace(settings, version=settings.version + 1)
        self.rows[key] = new
        return new


class MemoryAccounts:
    def __init__(self) -> None:
        self.rows: dict[str, AccountProfile] = {}

    async def get(self, account_id: str) -> AccountProfile | None:
        return self.rows.get(account_id)

    async def upsert(self, account: AccountProfile) -> bool:
        stored = self.rows.get(account.account_id)
        if stored is not None and stored.version >= account.version:
            return False
        self.rows[account.account_id] = account
        return True

    async def all(self) -> list[AccountProfile]:
        return list(self.rows.values())


class MemoryCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, Kind, datetime], int] = {}

    async def increment(self, account_id: str, kind: Kind, window_start: datetime) -> int:
        key = (account_id, kind, window_start)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


class MemoryDigests:
    def __init__(self) -> None:
        self.items: dict[str, DigestItem] = {}
        self.flushed: set[str] = set()

    async def add(self, item: DigestItem) -> None:
        self.items.setdefault(item.notification_id, item)

    async def due(self, now: datetime) -> list[DigestItem]:
        from tmsp_notifier.domain.policy import digest_due

        return [
            i
            for i in self.items.values()
            if i.notification_id not in self.flushed and digest_due(i.window_start, now)
        ]

    async def mark_flushed(self, notification_ids: Sequence[str]) -> None:
        self.flushed.update(notification_ids)


class MemoryAlerts:
    def __init__(self) -> None:
        self.incidents: dict[str, Severity] = {}
        self.products: dict[str, str] = {}
        self.endpoints: dict[str, tuple[frozenset[str], str]] = {}

    async def incident_severity(self, incident_id: str) -> Severity | None:
        return self.incidents.get(incident_id)

    async def set_incident_severity(self, incident_id: str, severity: Severity) -> None:
        self.incidents[incident_id] = max(severity, self.incidents.get(incident_id, severity))

    async def product_state(self, product_id: str) -> str | None:
        return self.products.get(product_id)

    async def set_product_state(self, product_id: str, state: str) -> None:
        self.products[product_id] = state

    async def endpoint_alert(self, key: str) -> tuple[frozenset[str], str] | None:
        return self.endpoints.get(key)

    async def set_endpoint_alert(self, key: str, alert: tuple[frozenset[str], str] | None) -> None:
        if alert is None:
            self.endpoints.pop(key, None)
        else:
            self.endpoints[key] = alert


@dataclass
class RecordingSender:
    """Records messages; ``script`` holds exceptions to raise on the next sends, in order."""

    sent: list[EmailMessage] = field(default_factory=list)
    script: list[Exception] = field(default_factory=list)
    attempts: int = 0

    async def send(self, message: EmailMessage) -> str:
        self.attempts += 1
        if self.script:
            raise self.script.pop(0)
        self.sent.append(message)
        return "250 2.0.0 OK"


@dataclass
class RecordingDeadLetters:
    letters: list[tuple[Notification, str, Origin]] = field(default_factory=list)

    async def publish(self, notification: Notification, reason: str, origin: Origin) -> None:
        self.letters.append((notification, reason, origin))

"""What the use cases need from the outside world (adapters implement these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import (
    AccountProfile,
    DeliveryRecord,
    DeliveryState,
    Kind,
    KindSettings,
    Notification,
)


class TransientSendError(Exception):
    """The mail was not accepted but may be later: connection trouble or a 4xx reply."""

    def __init__(self, reply: str, *, connection: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.connection = connection


class PermanentSendError(Exception):
    """The server refused the mail for good (5xx)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> str:
        """Hand the message to the server; returns its reply. Raises the errors above."""


class DeliveryLog(Protocol):
    async def claim(self, record: DeliveryRecord) -> tuple[DeliveryRecord, bool]:
        """Insert ``record`` unless one exists for its id; (the stored one, inserted now)."""

    async def set_decision(
        self, notification_id: str, decision: str, window_start: datetime, now: datetime
    ) -> DeliveryRecord:
        """Record the throttle decision once (a second call returns the first decision)."""

    async def mark_sending(self, notification_id: str, now: datetime) -> DeliveryRecord | None:
        """state=sending, attempts+1, before the mail goes out; None if already final."""

    async def mark(
        self,
        notification_id: str,
        state: DeliveryState,
        now: datetime,
        *,
        reply: str = "",
        subject: str = "",
    ) -> None: ...

    async def get(self, notification_id: str) -> DeliveryRecord | None: ...

    async def list_for_account(
        self, account_id: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[DeliveryRecord]:
        """Newest first (ties by id); ``after`` is the (created_at, id) of the last row seen."""


class SettingsRepository(Protocol):
    async def get(self, account_id: str, kind: Kind) -> KindSettings | None: ...

    async def put(self, settings: KindSettings) -> KindSettings:
        """Store with version+1; FailedPrecondition when the stored version moved on."""


class AccountRepository(Protocol):
    async def get(self, account_id: str) -> AccountProfile | None: ...

    async def upsert(self, account: AccountProfile) -> bool:
        """Store unless a newer version is stored; True when stored."""

    async def all(self) -> list[AccountProfile]: ...


class ThrottleCounter(Protocol):
    async def increment(self, account_id: str, kind: Kind, window_start: datetime) -> int:
        """Atomically count one more item in the window; returns the new count."""


@dataclass(frozen=True)
class DigestItem:
    notification_id: str
    account_id: str
    kind: Kind
    window_start: datetime
    summary: str


class DigestRepository(Protocol):
    async def add(self, item: DigestItem) -> None:
        """Idempotent on the notification id."""

    async def due(self, now: datetime) -> list[DigestItem]:
        """Unflushed items whose window closed."""

    async def mark_flushed(self, notification_ids: Sequence[str]) -> None: ...


class AlertStateRepository(Protocol):
    """Last severity mailed per incident, last liveness state per product, last view of
    each nonconforming endpoint."""

    async def incident_severity(self, incident_id: str) -> Severity | None: ...

    async def set_incident_severity(self, incident_id: str, severity: Severity) -> None: ...

    async def product_state(self, product_id: str) -> str | None: ...

    async def set_product_state(self, product_id: str, state: str) -> None: ...

    async def endpoint_alert(self, key: str) -> tuple[frozenset[str], str] | None:
        """Threat names and reason of a nonconforming endpoint as last seen (None: conforming)."""
        ...

    async def set_endpoint_alert(
        self, key: str, alert: tuple[frozenset[str], str] | None
    ) -> None: ...


@dataclass(frozen=True)
class Origin:
    """Where a request came from on the bus, for dead-letter headers."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


class DeadLetters(Protocol):
    async def publish(self, notification: Notification, reason: str, origin: Origin) -> None:
        """Dead-letter with the reason; secret parameters are never included."""

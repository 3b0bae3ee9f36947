"""What a notification is, who receives it and how an account configured each kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tmsp_common.severity import Severity


class Kind(StrEnum):
    """What a notification is about; mirrors ``tmsp.events.v1.NotificationKind`` by name."""

    CONFIRMATION_CODE = "confirmation_code"
    EMERGENCY_CODE = "emergency_code"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a kind, not a password
    ACCOUNT_LOCKED = "account_locked"
    TWO_FACTOR_ENABLED = "two_factor_enabled"
    TWO_FACTOR_DISABLED = "two_factor_disabled"
    TWO_FACTOR_DEVICE_CHANGED = "two_factor_device_changed"
    EMERGENCY_CODE_USED = "emergency_code_used"
    RECOVERY_CODE_USED = "recovery_code_used"
    REPORT_READY = "report_ready"
    INCIDENT = "incident"
    PRODUCT_OFFLINE = "product_offline"
    PRODUCT_ONLINE = "product_online"
    LOGS_NOT_RECEIVED = "logs_not_received"
    NONCONFORMING_ENDPOINT = "nonconforming_endpoint"
    SUBSCRIPTION_EXPIRING = "subscription_expiring"
    DIGEST = "digest"

    @property
    def is_security(self) -> bool:
        """Security mails from auth go to the user who asked; an account cannot mute them."""
        return self in SECURITY_KINDS

    @property
    def configurable(self) -> bool:
        """Kinds an account administrator may switch, filter, route and throttle."""
        return self in CONFIGURABLE_KINDS

    @property
    def throttled_by_default(self) -> bool:
        return self in EVENT_KINDS


SECURITY_KINDS = frozenset(
    {
        Kind.CONFIRMATION_CODE,
        Kind.EMERGENCY_CODE,
        Kind.PASSWORD_RESET,
        Kind.ACCOUNT_LOCKED,
        Kind.TWO_FACTOR_ENABLED,
        Kind.TWO_FACTOR_DISABLED,
        Kind.TWO_FACTOR_DEVICE_CHANGED,
        Kind.EMERGENCY_CODE_USED,
        Kind.RECOVERY_CODE_USED,
    }
)
EVENT_KINDS = frozenset(
    {
        Kind.INCIDENT,
        Kind.PRODUCT_OFFLINE,
        Kind.PRODUCT_ONLINE,
        Kind.LOGS_NOT_RECEIVED,
        Kind.NONCONFORMING_ENDPOINT,
    }
)
CONFIGURABLE_KINDS = EVENT_KINDS | {Kind.REPORT_READY, Kind.SUBSCRIPTION_EXPIRING}


WAZUH_MAILS_PER_HOUR = 12
"""Wazuh maild's default (``email_maxperhour``): at most 12 mails an hour, then a digest."""


@dataclass(frozen=True)
class KindSettings:
    """How one account wants one kind of notification handled.

    ``max_per_hour`` = 0 means no throttle. Past the limit, items wait for the hourly digest
    (``digest`` true) or are dropped with a record in the delivery log (``digest`` false).
    """

    account_id: str
    kind: Kind
    enabled: bool = True
    min_severity: Severity = Severity.MEDIUM
    notify_administrator: bool = True
    extra_recipients: tuple[str, ...] = ()
    max_per_hour: int = 0
    digest: bool = True
    version: int = 0

    @classmethod
    def default(cls, account_id: str, kind: Kind) -> KindSettings:
        return cls(
            account_id=account_id,
            kind=kind,
            max_per_hour=WAZUH_MAILS_PER_HOUR if kind.throttled_by_default else 0,
        )


@dataclass(frozen=True)
class AccountProfile:
    """The notifier's projection of an account (from ``AccountSnapshot``)."""

    account_id: str
    name: str = ""
    company_name: str = ""
    managed_by_email: str = ""
    time_zone: str = "UTC"
    valid_until: datetime | None = None
    deleted: bool = False
    version: int = 0


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Notification:
    """One email to send: at most one is sent per ``notification_id``.

    ``params`` may hold secrets (codes, reset links): they go into the body of the kinds that
    need them and nowhere else (never subjects, logs, the delivery log or dead letters).
    """

    notification_id: str
    kind: Kind
    account_id: str
    recipients: tuple[str, ...]
    params: dict[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    time_zone: str = "UTC"
    source: str = "request"
    source_event_id: str = ""
    throttle: bool = False
    summary: str = ""
    """One non-secret line describing the item, used in digests and the delivery log."""
    items: tuple[str, ...] = ()
    """Digest lines (digests only)."""


class DeliveryState(StrEnum):
    """Where one notification stands in the delivery log."""

    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    DIGESTED = "digested"
    DROPPED = "dropped"
    REJECTED = "rejected"
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        """A final state is never left: a redelivered notification is not sent again."""
        return self not in {DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.RETRYING}


@dataclass(frozen=True)
class DeliveryRecord:
    """One row of the delivery log (never holds secret parameters)."""

    notification_id: str
    account_id: str
    kind: Kind
    recipients: tuple[str, ...]
    state: DeliveryState
    created_at: datetime
    updated_at: datetime
    subject: str = ""
    attempts: int = 0
    last_reply: str = ""
    decision: str = ""
    window_start: datetime | None = None
    source: str = ""
    source_event_id: str = ""
    summary: str = ""
    sent_at: datetime | None = None
    message_id: str = ""

"""Rules: who receives what, when an event deserves a mail, throttling and digests.

Every function here is pure; time is passed in (from an injected clock), so windows and
reminders are tested exactly with a FakeClock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import AccountProfile, Kind, KindSettings

THROTTLE_WINDOW = timedelta(hours=1)
DEFAULT_REMINDER_DAYS: tuple[int, ...] = (30, 7, 1)


def derived_id(*parts: str) -> str:
    """A deterministic notification id: the same inputs always give the same id.

    Used for notifications the notifier derives itself (domain events, reminders, digests),
    so a redelivered event or a restarted periodic task never sends a second mail.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"n-{digest[:40]}"


def recipient_key(recipients: Iterable[str]) -> str:
    return ",".join(sorted(r.lower() for r in recipients))


_MESSAGE_ID_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def message_id(notification_id: str) -> str:
    """The Message-ID of the one mail of a notification (a resend carries the same one).

    ``<id@tmsp.notifier>`` when the id is made of ``[A-Za-z0-9._-]`` (max 128); any other id
    (e.g. auth's ``locked:<user>:<time>``: a colon may not appear in a Message-ID) is
    hashed, ``<h-<sha256 prefix>@tmsp.notifier>``: still derived from the id alone.
    """
    if _MESSAGE_ID_SAFE.fullmatch(notification_id):
        return f"<{notification_id}@tmsp.notifier>"
    return f"<h-{hashlib.sha256(notification_id.encode()).hexdigest()[:40]}@tmsp.notifier>"


def resolve_recipients(account: AccountProfile | None, settings: KindSettings) -> tuple[str, ...]:
    """The product administrator (if enabled and known) plus the extra recipients."""
    out: list[str] = []
    if settings.notify_administrator and account is not None and account.managed_by_email:
        out.append(account.managed_by_email)
    out.extend(settings.extra_recipients)
    seen: dict[str, str] = {}
    for r in out:
        seen.setdefault(r.lower(), r)
    return tuple(seen.values())


def should_notify_incident(
    severity: Severity, previously_notified: Severity | None, threshold: Severity
) -> bool:
    """A new incident at or above the threshold, or one escalated above what was mailed."""
    if severity < threshold or severity == Severity.UNSPECIFIED:
        return False
    return previously_notified is None or severity > previously_notified


MITIGATION_FAILED = "threat mitigation failed"


def should_notify_nonconforming(
    threats: frozenset[str], reason: str, previous: tuple[frozenset[str], str] | None
) -> bool:
    """An endpoint that became nonconforming, shows a threat it did not have at the last
    event, or whose mitigation now failed. The same open threats seen again (the
    correlator republishes on every newer result) send nothing."""
    if previous is None:
        return True
    before, before_reason = previous
    escalated = reason == MITIGATION_FAILED and before_reason != MITIGATION_FAILED
    return not threats <= before or escalated


class Decision(StrEnum):
    SEND = "send"
    DIGEST = "digest"
    DROP = "drop"


def window_start(now: datetime, window: timedelta = THROTTLE_WINDOW) -> datetime:
    """Start of the fixed throttle window holding ``now`` (windows align on the epoch)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = (now - epoch) // window
    return epoch + n * window


def throttle_decision(count_in_window: int, settings: KindSettings) -> Decision:
    """``count_in_window`` counts this item too (1 for the first of the window).

    Up to ``max_per_hour`` items are mailed one by one; the rest wait for the window's digest
    (Wazuh maild: 12 an hour, then grouped), or are dropped when digests are off.
    """
    if settings.max_per_hour <= 0 or count_in_window <= settings.max_per_hour:
        return Decision.SEND
    return Decision.DIGEST if settings.digest else Decision.DROP


def digest_id(account_id: str, kind: Kind, start: datetime) -> str:
    return derived_id("digest", account_id, kind.value, start.astimezone(UTC).isoformat())


def digest_due(start: datetime, now: datetime, window: timedelta = THROTTLE_WINDOW) -> bool:
    """A window's digest goes out once the window closed."""
    return now >= start + window


@dataclass(frozen=True)
class Reminder:
    days_before: int
    notification_id: str


def due_reminder(
    account: AccountProfile, now: datetime, days: Sequence[int] = DEFAULT_REMINDER_DAYS
) -> Reminder | None:
    """The subscription reminder due now, if any: the nearest threshold already crossed.

    With thresholds 30/7/1 days, a notifier that was down from 30 to 6 days before expiry
    sends only the 7-day reminder. The id depends on the account, the expiry date and the
    threshold, so each reminder is sent once however often the check runs; a renewed
    subscription (new ``valid_until``) starts a new series.
    """
    if account.valid_until is None or account.deleted or now >= account.valid_until:
        return None
    left = account.valid_until - now
    crossed = [d for d in days if d > 0 and left <= timedelta(days=d)]
    if not crossed:
        return None
    nearest = min(crossed)
    return Reminder(
        nearest,
        derived_id(
            "subscription_expiring",
            account.account_id,
            account.valid_until.astimezone(UTC).isoformat(),
            str(nearest),
        ),
    )


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or UTC when empty or unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def format_local(when: datetime | None, tz_name: str) -> str:
    """``2026-01-01 13:00 CET``-style date in the account's zone (naive means UTC)."""
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(zone(tz_name))
    return local.strftime("%Y-%m-%d %H:%M %Z")

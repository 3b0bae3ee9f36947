"""Timestamps as log formats write them, to seconds since the epoch (UTC).

Hand-written on purpose: ``datetime.strptime`` is slow and locale-dependent, and a parser of
outside input must never backtrack.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from tmsp_ingest.domain.records import InvalidRecord

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MIN_EPOCH = 0.0
_MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z


def _checked(seconds: float, text: str) -> float:
    if not _MIN_EPOCH <= seconds <= _MAX_EPOCH:
        raise InvalidRecord(f"timestamp out of range {text[:40]!r}")
    return seconds


def _hms(text: str) -> tuple[int, int, float]:
    parts = text.split(":")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise InvalidRecord(f"bad time {text[:40]!r}")
    try:
        second = float(parts[2])
    except ValueError:
        raise InvalidRecord(f"bad time {text[:40]!r}") from None
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59 or not 0 <= second < 61:
        raise InvalidRecord(f"bad time {text[:40]!r}")
    return hour, minute, second


def _civil(year: int, month: int, day: int, hms: tuple[int, int, float], text: str) -> float:
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise InvalidRecord(f"bad date {text[:40]!r}")
    hour, minute, second = hms
    whole = calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0))
    return _checked(whole + second, text)


def iso8601(text: str) -> float:
    """RFC 3339 / ISO 8601 (also Suricata's ``+0000`` offsets); naive means UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00", 1) if text[-1:] == "Z" else text)
    except (ValueError, IndexError):
        raise InvalidRecord(f"bad timestamp {text[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return _checked(when.timestamp(), text)
    except (OverflowError, OSError, ValueError):
        raise InvalidRecord(f"timestamp out of range {text[:40]!r}") from None


def epoch_millis(text: str) -> float:
    return _checked(int(text) / 1000.0, text)


def month_day(text: str, *, default_year: int, now: float | None = None) -> float:
    """``Mmm dd [yyyy] HH:MM:SS[.fff]`` (RFC 3164, CEF ``rt``); no year means the most
    recent such date not more than a day ahead of ``now``."""
    parts = text.split()
    if len(parts) not in (3, 4) or parts[0] not in MONTHS or not parts[1].isdigit():
        raise InvalidRecord(f"bad timestamp {text[:40]!r}")
    month, day = MONTHS[parts[0]], int(parts[1])
    if len(parts) == 4:
        if not parts[2].isdigit() or len(parts[2]) != 4:
            raise InvalidRecord(f"bad timestamp {text[:40]!r}")
        return _civil(int(parts[2]), month, day, _hms(parts[3]), text)
    hms = _hms(parts[2])
    if month == 2 and day == 29 and not calendar.isleap(default_year):
        return _civil(default_year - (default_year % 4), month, day, hms, text)
    seconds = _civil(default_year, month, day, hms, text)
    if now is not None and seconds > now + 86400:
        seconds = _civil(default_year - 1, month, day, hms, text)
    return seconds


def any_timestamp(text: str, *, default_year: int, now: float | None = None) -> float:
    """Whichever of the formats above ``text`` is in."""
    if text.isdigit():
        return epoch_millis(text)
    if text[:3] in MONTHS:
        return month_day(text, default_year=default_year, now=now)
    return iso8601(text)

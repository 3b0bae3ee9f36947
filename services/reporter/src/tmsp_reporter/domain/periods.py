"""Report kinds and their periods, computed in the account's time zone.

A period is ``[start, end)`` in UTC, but its boundaries are local midnights (a daily period
across a DST change lasts 23 or 25 hours). A report id is derived from (account, kind,
period), so asking twice, restarting, or running a second replica never makes two reports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tmsp_common.errors import InvalidArgument

MAX_ON_DEMAND = timedelta(days=366)


class ReportKind(StrEnum):
    DAILY_ADMINISTRATIVE = "daily_administrative"
    WEEKLY_EXECUTIVE = "weekly_executive"
    MONTHLY_EXECUTIVE = "monthly_executive"
    ON_DEMAND = "on_demand"

    @property
    def periodic(self) -> bool:
        return self is not ReportKind.ON_DEMAND

    @property
    def display_name(self) -> str:
        return {
            ReportKind.DAILY_ADMINISTRATIVE: "Daily administrative report",
            ReportKind.WEEKLY_EXECUTIVE: "Weekly executive report",
            ReportKind.MONTHLY_EXECUTIVE: "Monthly executive report",
            ReportKind.ON_DEMAND: "On-demand report",
        }[self]


PERIODIC_KINDS = (
    ReportKind.DAILY_ADMINISTRATIVE,
    ReportKind.WEEKLY_EXECUTIVE,
    ReportKind.MONTHLY_EXECUTIVE,
)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    time_zone: str

    def label(self) -> str:
        """Human form in the period's own time zone, e.g. ``2026-03-29`` or a range."""
        tz = zone(self.time_zone)
        first = self.start.astimezone(tz)
        last = (self.end - timedelta(microseconds=1)).astimezone(tz)
        if first.date() == last.date():
            return first.date().isoformat()
        return f"{first.date().isoformat()} to {last.date().isoformat()}"


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (empty means UTC); InvalidArgument naming time_zone if unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument("time_zone", f"unknown IANA time zone {name!r}") from None


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _first_day(kind: ReportKind, day: date) -> tuple[date, date]:
    if kind is ReportKind.DAILY_ADMINISTRATIVE:
        return day, day + timedelta(days=1)
    if kind is ReportKind.WEEKLY_EXECUTIVE:
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if kind is ReportKind.MONTHLY_EXECUTIVE:
        first = day.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        return first, nxt
    raise InvalidArgument("kind", "on-demand reports have no calendar period")


def period_containing(kind: ReportKind, moment: datetime, time_zone: str) -> Period:
    """The calendar period of ``kind`` (day, ISO week from Monday, month) holding ``moment``."""
    tz = zone(time_zone)
    first, nxt = _first_day(kind, moment.astimezone(tz).date())
    return Period(_local_midnight(first, tz), _local_midnight(nxt, tz), time_zone or "UTC")


def last_completed(kind: ReportKind, now: datetime, time_zone: str) -> Period:
    """The most recent period of ``kind`` that has ended by ``now``."""
    current = period_containing(kind, now, time_zone)
    return period_containing(kind, current.start - timedelta(microseconds=1), time_zone)


def due_period(kind: ReportKind, now: datetime, time_zone: str, delay: timedelta) -> Period:
    """The latest period whose end plus ``delay`` has passed (scheduled generation).

    The delay lets the data of the period arrive first (the correlator's daily count runs at
    02:00 local, late uploads trickle in).
    """
    return last_completed(kind, now - delay, time_zone)


def on_demand(start: datetime, end: datetime, time_zone: str) -> Period:
    """An arbitrary period; InvalidArgument unless ``start < end`` and at most a year long."""
    zone(time_zone)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidArgument("period_start", "must carry a time zone")
    if end <= start:
        raise InvalidArgument("period_end", "must be after period_start")
    if end - start > MAX_ON_DEMAND:
        raise InvalidArgument("period_end", "an on-demand period is at most 366 days")
    return Period(start.astimezone(UTC), end.astimezone(UTC), time_zone or "UTC")


def report_id(account_id: str, kind: ReportKind, period: Period) -> str:
    """Deterministic id of the report of ``account_id`` for ``kind`` and ``period``."""
    key = "|".join(
        [account_id, kind.value, period.start.isoformat(), period.end.isoformat()]
    ).encode()
    return "rpt-" + hashlib.sha256(key).hexdigest()[:32]

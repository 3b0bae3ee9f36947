"""Report periods in the account's time zone, and report ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tmsp_common.errors import InvalidArgument
from tmsp_reporter.domain.periods import (
    ReportKind,
    due_period,
    last_completed,
    on_demand,
    period_containing,
    report_id,
)

D, W, M = (
    ReportKind.DAILY_ADMINISTRATIVE,
    ReportKind.WEEKLY_EXECUTIVE,
    ReportKind.MONTHLY_EXECUTIVE,
)


def test_daily_period_is_the_local_day() -> None:
    # 23:30 UTC on 31 March is already 1 April in Berlin (CEST, UTC+2)
    p = period_containing(D, datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert p.start == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    assert p.end == datetime(2026, 4, 1, 22, 0, tzinfo=UTC)
    assert p.label() == "2026-04-01"


def test_daily_period_across_dst_change_lasts_23_hours() -> None:
    p = period_containing(D, datetime(2026, 3, 29, 12, tzinfo=UTC), "Europe/Berlin")
    assert p.end - p.start == timedelta(hours=23)
    autumn = period_containing(D, datetime(2026, 10, 25, 12, tzinfo=UTC), "Europe/Berlin")
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_week_starts_monday_and_month_on_the_first() -> None:
    w = period_containing(W, datetime(2026, 12, 3, 10, tzinfo=UTC), "America/New_York")
    assert w.start == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)  # Monday 00:00 EST
    assert w.end - w.start == timedelta(days=7)
    m = period_containing(M, datetime(2026, 2, 14, tzinfo=UTC), "Asia/Tokyo")
    assert m.start == datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
    assert m.end == datetime(2026, 2, 28, 15, 0, tzinfo=UTC)
    assert m.label() == "2026-02-01 to 2026-02-28"


def test_last_completed_and_due_after_the_delay() -> None:
    now = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)  # 03:00 in Berlin
    assert last_completed(D, now, "Europe/Berlin").label() == "2026-06-09"
    early = due_period(D, now, "Europe/Berlin", timedelta(hours=4))
    assert early.label() == "2026-06-08"  # yesterday's is not due before 04:00
    assert due_period(D, now, "Europe/Berlin", timedelta(hours=3)).label() == "2026-06-09"
    assert last_completed(M, now, "UTC").label() == "2026-05-01 to 2026-05-31"


def test_on_demand_bounds() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert on_demand(start, start + timedelta(days=3), "UTC").end == start + timedelta(days=3)
    with pytest.raises(InvalidArgument, match="period_end"):
        on_demand(start, start, "UTC")
    with pytest.raises(InvalidArgument, match="366"):
        on_demand(start, start + timedelta(days=400), "UTC")
    with pytest.raises(InvalidArgument, match="time_zone"):
        on_demand(start, start + timedelta(days=1), "Mars/Olympus")


def test_report_id_is_deterministic_per_account_kind_and_period() -> None:
    p = period_containing(D, datetime(2026, 5, 5, tzinfo=UTC), "UTC")
    q = period_containing(D, datetime(2026, 5, 6, tzinfo=UTC), "UTC")
    # a fixed value: every replica and every restart derives the same id
    assert report_id("a", D, p) == "rpt-dd5280c543cac9f112d25ffc2a7c63db"
    assert len({report_id("a", D, p), report_id("b", D, p), report_id("a", D, q)}) == 3
    assert report_id("a", D, p) != report_id("a", ReportKind.ON_DEMAND, p)

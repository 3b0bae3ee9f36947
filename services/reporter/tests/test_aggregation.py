"""Executive aggregates: totals and trend by severity, top threats, endpoints, ATT&CK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tmsp_common.severity import Severity
from tmsp_reporter.domain.aggregation import previous_period, summarise, tactic_of, technique_of
from tmsp_reporter.domain.model import (
    Compliance,
    IncidentStatus,
    IncidentView,
    ProductRow,
    ProductState,
    account_compliance,
    account_products,
)
from tmsp_reporter.domain.periods import Period, ReportKind, period_containing

WEEK = period_containing(
    ReportKind.WEEKLY_EXECUTIVE, datetime(2026, 6, 10, tzinfo=UTC), "Europe/Berlin"
)


def inc(
    n: int,
    at: datetime,
    severity: Severity,
    title: str = "Worm",
    endpoints: tuple[str, ...] = ("pc-1",),
    tags: tuple[str, ...] = (),
    status: IncidentStatus = IncidentStatus.NEW,
) -> IncidentView:
    return IncidentView(
        incident_id=f"i{n}",
        account_id="a",
        title=title,
        severity=severity,
        status=status,
        first_seen=at,
        last_seen=at + timedelta(minutes=10),
        event_count=1,
        endpoints=endpoints,
        attack_tags=tags,
        recommended_actions=("Isolate",),
    )


def test_summary_counts_ranks_and_buckets_by_local_day() -> None:
    monday = WEEK.start  # Monday 00:00 Berlin = Sunday 22:00 UTC
    rows = [
        inc(1, monday + timedelta(minutes=30), Severity.HIGH, tags=("attack.lateral-movement",)),
        inc(2, monday + timedelta(days=1), Severity.CRITICAL, "Ransomware", ("pc-1", "pc-2")),
        inc(3, monday + timedelta(days=1, hours=2), Severity.HIGH, tags=("attack.t1021.002",)),
        inc(4, monday - timedelta(days=2), Severity.LOW),  # outside the week
        inc(5, monday + timedelta(days=6), Severity.LOW, status=IncidentStatus.RESOLVED),
    ]
    s = summarise(rows, WEEK, previous_total=1)
    assert s.total == 4 and s.open == 3 and s.change == 3
    assert s.by_severity[Severity.HIGH] == 2 and s.by_severity[Severity.CRITICAL] == 1
    assert [b.total for b in s.trend] == [1, 2, 0, 0, 0, 0, 1]
    assert s.trend[0].label == "2026-06-08"
    assert s.top_threats[0] == ("Worm", 3, Severity.HIGH)
    assert s.top_endpoints[0] == ("pc-1", 4)
    assert s.tactics == (("lateral_movement", 1),)
    assert s.techniques == (("T1021.002", 1),)
    assert s.recommended_actions == (("Isolate", 4),)


def test_long_periods_trend_by_week_and_previous_period() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    period = Period(start, start + timedelta(days=90), "UTC")
    s = summarise([inc(1, start + timedelta(days=8), Severity.MEDIUM)], period)
    assert len(s.trend) == 13 and s.trend[1].total == 1
    assert s.trend[0].label.startswith("week of")
    prev = previous_period(period)
    assert prev.end == period.start and prev.end - prev.start == timedelta(days=90)


def test_tags() -> None:
    assert tactic_of("attack.command-and-control") == "command_and_control"
    assert tactic_of("attack.t1059") is None and technique_of("attack.t1059") == "T1059"
    assert tactic_of("car.2013-05-002") is None


def test_account_compliance() -> None:
    assert account_compliance([]) is Compliance.UNKNOWN
    assert account_compliance([None, True]) is Compliance.ENABLED
    assert account_compliance([False]) is Compliance.DISABLED
    assert account_compliance([True, False]) is Compliance.PARTIAL


def product(pid: str, state: ProductState, compliance: bool | None, hours_ago: int) -> ProductRow:
    received = datetime(2026, 6, 10, 12, tzinfo=UTC) - timedelta(hours=hours_ago)
    return ProductRow(pid, "acct-a", pid, 1, int(state), 1, None, received, None, compliance, True)


def test_account_products_leave_deregistered_ones_out() -> None:
    old = product("tda-old", ProductState.DEREGISTERED, False, 1)
    new = product("tda-new", ProductState.ACTIVE, True, 3)
    pending = product("tda-pending", ProductState.UNSPECIFIED, None, 5)  # not registered yet
    mine = account_products([old, new, pending])
    assert mine.registered == (new, pending)
    assert mine.compliance is Compliance.ENABLED  # the old appliance's last value is gone
    assert mine.last_received == new.last_received
    assert account_products([old]) == account_products([])

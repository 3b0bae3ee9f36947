"""What executive and administrative reports say, computed from incident views (pure)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from tmsp_common.severity import Severity
from tmsp_reporter.domain.model import IncidentView
from tmsp_reporter.domain.periods import Period, zone

TACTICS = (
    "reconnaissance",
    "resource_development",
    "initial_access",
    "execution",
    "persistence",
    "privilege_escalation",
    "defense_evasion",
    "credential_access",
    "discovery",
    "lateral_movement",
    "collection",
    "command_and_control",
    "exfiltration",
    "impact",
)
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")


def tactic_of(tag: str) -> str | None:
    """The ATT&CK tactic a Sigma-style tag names (``attack.lateral-movement``), else None."""
    name = tag.strip().lower().removeprefix("attack.").replace("-", "_").replace(" ", "_")
    if _TECHNIQUE.match(name):
        return None
    return name if name in TACTICS else None


def technique_of(tag: str) -> str | None:
    name = tag.strip().lower().removeprefix("attack.")
    return name.upper() if _TECHNIQUE.match(name) else None


@dataclass(frozen=True)
class TrendBucket:
    label: str
    by_severity: dict[Severity, int]

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


@dataclass(frozen=True)
class ExecutiveSummary:
    total: int
    open: int
    by_severity: dict[Severity, int]
    trend: tuple[TrendBucket, ...]
    top_threats: tuple[tuple[str, int, Severity], ...]
    top_endpoints: tuple[tuple[str, int], ...]
    tactics: tuple[tuple[str, int], ...]
    techniques: tuple[tuple[str, int], ...]
    recommended_actions: tuple[tuple[str, int], ...]
    previous_total: int | None = None

    @property
    def change(self) -> int | None:
        """Incidents compared with the previous period of the same length."""
        return None if self.previous_total is None else self.total - self.previous_total


REPORTED_SEVERITIES = (
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.INFORMATIONAL,
)


def _buckets(period: Period) -> list[tuple[date, date, str]]:
    """Days of the period (local), or weeks when it is longer than 62 days."""
    tz = zone(period.time_zone)
    first = period.start.astimezone(tz).date()
    last = (period.end - timedelta(microseconds=1)).astimezone(tz).date()
    step = 1 if (last - first).days < 62 else 7
    out: list[tuple[date, date, str]] = []
    day = first
    while day <= last:
        nxt = min(day + timedelta(days=step), last + timedelta(days=1))
        label = day.isoformat() if step == 1 else f"week of {day.isoformat()}"
        out.append((day, nxt, label))
        day = nxt
    return out


def in_period(incident: IncidentView, period: Period) -> bool:
    """An incident belongs to a period when it was active in it."""
    return incident.first_seen < period.end and incident.last_seen >= period.start


def summarise(
    incidents: Iterable[IncidentView],
    period: Period,
    *,
    top: int = 10,
    previous_total: int | None = None,
) -> ExecutiveSummary:
    """Totals and trend by severity, top threats, endpoints, ATT&CK tactics, actions."""
    rows = [i for i in incidents if in_period(i, period)]
    tz = zone(period.time_zone)
    buckets = _buckets(period)
    trend_counts: list[Counter[Severity]] = [Counter() for _ in buckets]
    by_sev: Counter[Severity] = Counter()
    threats: Counter[str] = Counter()
    worst: dict[str, Severity] = {}
    endpoints: Counter[str] = Counter()
    tactics: Counter[str] = Counter()
    techniques: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for inc in rows:
        by_sev[inc.severity] += 1
        threats[inc.title] += 1
        worst[inc.title] = max(worst.get(inc.title, Severity.UNSPECIFIED), inc.severity)
        endpoints.update(set(inc.endpoints))
        for tag in set(inc.attack_tags):
            if (tactic := tactic_of(tag)) is not None:
                tactics[tactic] += 1
            elif (tech := technique_of(tag)) is not None:
                techniques[tech] += 1
        actions.update(set(inc.recommended_actions))
        local = max(inc.first_seen, period.start).astimezone(tz).date()
        for n, (lo, hi, _) in enumerate(buckets):
            if lo <= local < hi:
                trend_counts[n][inc.severity] += 1
                break

    def ranked(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top])

    return ExecutiveSummary(
        total=len(rows),
        open=sum(1 for i in rows if i.status.is_open),
        by_severity={s: by_sev.get(s, 0) for s in REPORTED_SEVERITIES},
        trend=tuple(
            TrendBucket(label, {s: c.get(s, 0) for s in REPORTED_SEVERITIES})
            for (_, _, label), c in zip(buckets, trend_counts, strict=True)
        ),
        top_threats=tuple((t, n, worst[t]) for t, n in ranked(threats)),
        top_endpoints=ranked(endpoints),
        tactics=ranked(tactics),
        techniques=ranked(techniques),
        recommended_actions=ranked(actions),
        previous_total=previous_total,
    )


def previous_period(period: Period) -> Period:
    """The period of the same length just before ``period`` (for the trend line)."""
    length = period.end - period.start
    return Period(period.start - length, period.start, period.time_zone)


def most_severe_first(incidents: Sequence[IncidentView]) -> list[IncidentView]:
    return sorted(incidents, key=lambda i: (-int(i.severity), i.first_seen, i.incident_id))

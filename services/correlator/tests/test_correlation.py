# ruff: noqa: E501  (rule tables read best one case per line)
"""Correlation semantics as tables: events in, incidents out."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from tmsp_correlator.adapters.hit_records import state_of, state_value
from tmsp_correlator.domain.correlation import (
    SEEN,
    GroupState,
    Limits,
    MemoryCorrelator,
    apply_hit,
    group_key,
    hits_for_event,
    idle_groups,
)
from tmsp_correlator.domain.rules import load_rules

DETECTIONS = """
title: High severity detection
name: high
logsource: {category: detection}
level: high
tags: [attack.t1071]
recommended_actions: [Isolate the endpoint]
detection:
  s:
    severity: [high, critical]
  condition: s
---
title: C2 callback
name: c2
logsource: {category: detection}
level: high
detection:
  s:
    Category: c2
  condition: s
---
title: Lateral movement
name: lateral
logsource: {category: detection}
level: high
detection:
  s:
    Category: lateral
  condition: s
---
title: Data sent
name: bytes
logsource: {category: detection}
level: low
detection:
  s:
    Category: transfer
  condition: s
"""


def corr(body: str, name: str = "corr", extra: str = "") -> str:
    return f"title: {name} title\nname: {name}\nlevel: critical\n{extra}correlation:\n{body}"


def ev(eid: str, t: float, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_type": "detection",
        "product_kind": "threat_discovery_appliance",
        "account_id": "acc1",
        "endpoint_host": "h1",
        "severity": "low",
        "threat_category": "",
    }
    base.update(fields)
    base["event_id"] = eid
    base["ts"] = t
    return base


def high(eid: str, t: float, **kw: Any) -> dict[str, Any]:
    return ev(eid, t, severity="high", **kw)


@dataclass
class Case:
    name: str
    rule: str
    events: list[dict[str, Any]]
    incidents: list[list[str]]
    """Per incident (sorted by first event id), the contributing event ids."""
    late: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=lambda: Limits(allowed_lateness_s=300))


EVENT_COUNT = corr(
    "  type: event_count\n  rules: [high]\n  group-by: [Hostname]\n  timespan: 5m\n  condition: {gte: 3}\n"
)

CASES = [
    Case("event_count below threshold", EVENT_COUNT, [high("a", 0), high("b", 10)], []),
    Case(
        "event_count reaches threshold",
        EVENT_COUNT,
        [high("a", 0), high("b", 10), high("c", 20)],
        [["a", "b", "c"]],
    ),
    Case(
        "window boundary inclusive (exactly timespan apart)",
        EVENT_COUNT,
        [high("a", 0), high("b", 150), high("c", 300)],
        [["a", "b", "c"]],
    ),
    Case(
        "window boundary exclusive (just over timespan)",
        EVENT_COUNT,
        [high("a", 0), high("b", 150), high("c", 300.5)],
        [],
    ),
    Case(
        "non-matching events do not count",
        EVENT_COUNT,
        [high("a", 0), ev("x", 5), high("b", 10), ev("y", 15)],
        [],
    ),
    Case(
        "group-by separates endpoints",
        EVENT_COUNT,
        [
            high("a", 0),
            high("b", 10, endpoint_host="h2"),
            high("c", 20),
            high("d", 30, endpoint_host="h2"),
        ],
        [],
    ),
    Case(
        "group-by: each group fires on its own",
        EVENT_COUNT,
        [high(f"{h}{i}", i, endpoint_host=h) for i in range(3) for h in ("p", "q")],
        [["p0", "p1", "p2"], ["q0", "q1", "q2"]],
    ),
    Case(
        "accounts never share a group",
        EVENT_COUNT,
        [high("a", 0), high("b", 10, account_id="acc2"), high("c", 20)],
        [],
    ),
    Case(
        "out-of-order event within lateness counts",
        EVENT_COUNT,
        [high("c", 200), high("a", 0), high("b", 100)],
        [["a", "b", "c"]],
    ),
    Case(
        "out-of-order event completes an earlier window only",
        EVENT_COUNT,
        [high("a", 0), high("d", 400), high("b", 100)],
        [],
    ),
    Case(
        "late event beyond allowed lateness is rejected",
        EVENT_COUNT,
        [high("a", 1000), high("b", 1010), high("old", 600)],
        [],
        late=["old"],
    ),
    Case(
        "repeated matches update the open incident",
        EVENT_COUNT,
        [high("a", 0), high("b", 10), high("c", 20), high("d", 30), high("e", 200)],
        [["a", "b", "c", "d", "e"]],
    ),
    Case(
        "a match after the incident window opens a new incident",
        EVENT_COUNT,
        [
            high("a", 0),
            high("b", 10),
            high("c", 20),
            high("d", 1000),
            high("e", 1010),
            high("f", 1020),
        ],
        [["a", "b", "c"], ["d", "e", "f"]],
    ),
    Case(
        "duplicate event (replay) is ignored",
        EVENT_COUNT,
        [high("a", 0), high("a", 0), high("a", 0), high("b", 10)],
        [],
    ),
    Case(
        "value_count distinct values",
        corr(
            "  type: value_count\n  rules: [high]\n  group-by: [src_ip]\n  timespan: 10m\n  condition: {gte: 3, field: Hostname}\n"
        ),
        [
            high("a", 0, source_ip="1.1.1.1", endpoint_host="x"),
            high("b", 5, source_ip="1.1.1.1", endpoint_host="x"),
            high("c", 6, source_ip="1.1.1.1", endpoint_host="y"),
            high("d", 7, source_ip="1.1.1.1", endpoint_host="z"),
        ],
        [["a", "b", "c", "d"]],
    ),
    Case(
        "value_count not reached",
        corr(
            "  type: value_count\n  rules: [high]\n  group-by: [src_ip]\n  timespan: 10m\n  condition: {gte: 3, field: Hostname}\n"
        ),
        [
            high("a", 0, source_ip="1.1.1.1", endpoint_host="x"),
            high("b", 5, source_ip="1.1.1.1", endpoint_host="x"),
            high("c", 6, source_ip="1.1.1.1", endpoint_host="y"),
        ],
        [],
    ),
    Case(
        "temporal: all rules in window, any order",
        corr("  type: temporal\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 10m\n"),
        [ev("l", 0, threat_category="lateral"), ev("c", 60, threat_category="c2")],
        [["c", "l"]],
    ),
    Case(
        "temporal: too far apart",
        corr("  type: temporal\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 10m\n"),
        [ev("l", 0, threat_category="lateral"), ev("c", 601, threat_category="c2")],
        [],
    ),
    Case(
        "temporal_ordered: in order fires",
        corr(
            "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 10m\n"
        ),
        [ev("c", 0, threat_category="c2"), ev("l", 60, threat_category="lateral")],
        [["c", "l"]],
    ),
    Case(
        "temporal_ordered: wrong order does not fire",
        corr(
            "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 10m\n"
        ),
        [ev("l", 0, threat_category="lateral"), ev("c", 60, threat_category="c2")],
        [],
    ),
    Case(
        "temporal_ordered: order is event time, not arrival",
        corr(
            "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 10m\n"
        ),
        [ev("l", 60, threat_category="lateral"), ev("c", 0, threat_category="c2")],
        [["c", "l"]],
    ),
    Case(
        "aliases join different fields",
        corr(
            "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [host]\n  timespan: 10m\n"
            "  aliases:\n    host:\n      c2: Hostname\n      lateral: src_host\n"
        ),
        [
            ev("c", 0, threat_category="c2", endpoint_host="h9"),
            ev("l", 60, threat_category="lateral", endpoint_host="other", source_host="h9"),
        ],
        [["c", "l"]],
    ),
    Case(
        "value_sum over threshold",
        corr(
            "  type: value_sum\n  rules: [bytes]\n  group-by: [Hostname]\n  timespan: 1h\n  condition: {gt: 100, field: extra.bytes}\n"
        ),
        [
            ev("a", 0, threat_category="transfer", **{"extra.bytes": "60"}),
            ev("b", 10, threat_category="transfer", **{"extra.bytes": "50"}),
        ],
        [["a", "b"]],
    ),
    Case(
        "value_avg within range",
        corr(
            "  type: value_avg\n  rules: [bytes]\n  group-by: [Hostname]\n  timespan: 1h\n  condition: {range: {gte: 10, lte: 20}, field: extra.bytes}\n"
        ),
        [
            ev("a", 0, threat_category="transfer", **{"extra.bytes": "50"}),
            ev("b", 10, threat_category="transfer", **{"extra.bytes": "5"}),
            ev("c", 20, threat_category="transfer", **{"extra.bytes": "5"}),
        ],
        [["a", "b", "c"]],
    ),
    Case(
        "value_percentile",
        corr(
            "  type: value_percentile\n  rules: [bytes]\n  group-by: [Hostname]\n  timespan: 1h\n  condition: {gte: 90, field: extra.bytes, percentile: 50}\n"
        ),
        [
            ev("a", 0, threat_category="transfer", **{"extra.bytes": "1"}),
            ev("b", 10, threat_category="transfer", **{"extra.bytes": "95"}),
            ev("c", 20, threat_category="transfer", **{"extra.bytes": "100"}),
        ],
        [["a", "b", "c"]],
    ),
    Case(
        "eq condition",
        corr(
            "  type: event_count\n  rules: [high]\n  group-by: [Hostname]\n  timespan: 5m\n  condition: {eq: 2}\n"
        ),
        [high("a", 0), high("b", 10)],
        [["a", "b"]],
    ),
    Case(
        "neq condition",
        corr(
            "  type: event_count\n  rules: [high]\n  group-by: [Hostname]\n  timespan: 5m\n  condition: {neq: 1}\n"
        ),
        [high("a", 0)],
        [],
    ),
]


def run(case: Case) -> MemoryCorrelator:
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", case.rule)])
    assert rs.rejected == []
    mc = MemoryCorrelator(rs, case.limits)
    for e in case.events:
        mc.process(e)
    return mc


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_correlation_table(case: Case) -> None:
    mc = run(case)
    got = sorted(
        sorted(i["event_ids"]) for i in mc.incidents.values() if i["rule_ids"][0] == "corr"
    )
    assert got == sorted(sorted(x) for x in case.incidents)
    assert sorted(h["e"] for h, _ in mc.late) == sorted(case.late)
    for _, reason in mc.late:
        assert "late event" in reason


def test_incident_carries_rule_metadata_and_timeline_in_event_time_order() -> None:
    mc = run(Case("x", EVENT_COUNT, [high("c", 200), high("a", 0), high("b", 100)], []))
    (inc,) = [i for i in mc.incidents.values() if i["rule_ids"][0] == "corr"]
    assert inc["rule_ids"] == ["corr", "high"]
    assert inc["severity"] == "critical"
    assert inc["tags"] == ["attack.t1071"]
    assert inc["actions"] == ["Isolate the endpoint"]
    assert [t[1] for t in inc["timeline"]] == ["a", "b", "c"]
    assert inc["first"] == 0 and inc["last"] == 200 and inc["count"] == 3
    assert inc["endpoints"] == [["h1", "", ""]]


def test_incident_id_is_deterministic_across_replays() -> None:
    events = [high("a", 0), high("b", 10), high("c", 20)]
    first = run(Case("x", EVENT_COUNT, events, []))
    second = run(Case("x", EVENT_COUNT, events, []))
    assert set(first.incidents) == set(second.incidents)


def test_replayed_event_reemits_its_incident_without_changing_it() -> None:
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", EVENT_COUNT)])
    limits = Limits()
    state = None
    for e in [high("a", 0), high("b", 10), high("c", 20)]:
        (hit,) = [h for h in hits_for_event(rs, e) if h["c"] == "corr"]
        state, out = apply_hit(rs, state, hit, limits)
    assert out.incident is not None and out.new_incident
    version = out.incident["version"]
    state, again = apply_hit(rs, state, hit, limits)
    assert again.duplicate and again.incident is not None
    assert again.incident["version"] == version and again.incident["count"] == 3


def test_state_survives_its_changelog_round_trip() -> None:
    """The state is what the table's changelog carries: read back mid-window before every
    hit (JSON lists, no indexes), it goes on exactly as the state that stayed in memory,
    and its entries are tuples again (what the compiled build's types say)."""
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", EVENT_COUNT)])
    limits = Limits()
    events = [high("a", 0), high("b", 10), high("d", 5), high("c", 20), high("b", 10)]
    events += [high(f"x{i}", 30 + 7 * i) for i in range(6)]
    hits = [h for e in events for h in hits_for_event(rs, e) if h["c"] == "corr"]
    kept: GroupState | None = None
    read: GroupState | None = None
    for hit in hits:
        kept, out_kept = apply_hit(rs, kept, hit, limits)
        recovered = state_of(state_value(read)) if read is not None else None
        read, out_read = apply_hit(rs, recovered, hit, limits)
        assert out_read == out_kept
        assert all(type(e) is tuple for e in read["w"])
    assert read == kept and kept["inc"]["count"] == 10


def test_chained_correlation_fires_on_correlation_incidents() -> None:
    chain = (
        EVENT_COUNT
        + "---\n"
        + corr(
            "  type: event_count\n  rules: [corr]\n  group-by: [Hostname]\n  timespan: 1h\n  condition: {gte: 2}\n",
            name="outer",
        )
    )
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", chain)])
    assert rs.rejected == []
    mc = MemoryCorrelator(rs, Limits(allowed_lateness_s=300))
    for e in [high("a", 0), high("b", 10), high("c", 20)]:
        mc.process(e)
    assert not [i for i in mc.incidents.values() if i["rule_ids"][0] == "outer"]
    for e in [high("d", 1000), high("e", 1010), high("f", 1020)]:
        mc.process(e)
    outer = [i for i in mc.incidents.values() if i["rule_ids"][0] == "outer"]
    inner = [i for i in mc.incidents.values() if i["rule_ids"][0] == "corr"]
    assert len(inner) == 2 and len(outer) == 1
    assert sorted(outer[0]["event_ids"]) == sorted(i["id"] for i in inner)
    assert outer[0]["rule_ids"] == ["outer", "corr"]


def test_generate_false_hides_base_rule_and_unreferenced_rules_raise_incidents() -> None:
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", EVENT_COUNT)])
    mc = MemoryCorrelator(rs)
    mc.process(ev("c", 0, threat_category="c2"))
    mc.process(high("h", 1))
    rules = sorted(i["rule_ids"][0] for i in mc.incidents.values())
    assert rules == ["c2"]


def test_removed_rule_hits_are_rejected_not_crashing() -> None:
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", EVENT_COUNT)])
    (hit,) = [h for h in hits_for_event(rs, high("a", 0)) if h["c"] == "corr"]
    rs2 = load_rules([("det.yml", DETECTIONS)])
    _, out = apply_hit(rs2, None, hit, Limits())
    assert out.late_reason and "unknown correlation" in out.late_reason


# --- every correlation type through the same table: window boundaries, out-of-order, late,
# group-by. Each recipe is a rule plus the events (in event-time order) that together, and
# only together, satisfy it; ``group`` is the backend field of its group-by.

SPAN = 300.0


@dataclass(frozen=True)
class Recipe:
    rule: str
    events: list[dict[str, Any]]
    group: str


def _value(eid: str, t: float, v: float) -> dict[str, Any]:
    return ev(eid, t, threat_category="transfer", **{"extra.bytes": str(v)})


def _val_rule(ctype: str, cond: str) -> str:
    return corr(
        f"  type: {ctype}\n  rules: [bytes]\n  group-by: [Hostname]\n  timespan: 5m\n"
        f"  condition: {{{cond}, field: extra.bytes}}\n"
    )


RECIPES: dict[str, Recipe] = {
    "event_count": Recipe(EVENT_COUNT, [high("a", 0), high("b", 0), high("c", 0)], "endpoint_host"),
    "value_count": Recipe(
        corr(
            "  type: value_count\n  rules: [high]\n  group-by: [src_ip]\n  timespan: 5m\n  condition: {gte: 3, field: Hostname}\n"
        ),
        [high(e, 0, source_ip="10.0.0.1", endpoint_host=f"h-{e}") for e in "abc"],
        "source_ip",
    ),
    "temporal": Recipe(
        corr("  type: temporal\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 5m\n"),
        [ev("a", 0, threat_category="lateral"), ev("b", 0, threat_category="c2")],
        "endpoint_host",
    ),
    "temporal_ordered": Recipe(
        corr(
            "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [Hostname]\n  timespan: 5m\n"
        ),
        [ev("a", 0, threat_category="c2"), ev("b", 0, threat_category="lateral")],
        "endpoint_host",
    ),
    "value_sum": Recipe(
        _val_rule("value_sum", "gt: 100"), [_value("a", 0, 60), _value("b", 0, 50)], "endpoint_host"
    ),
    "value_avg": Recipe(
        _val_rule("value_avg", "range: {gte: 40, lte: 60}"),
        [_value("a", 0, 100), _value("b", 0, 0)],
        "endpoint_host",
    ),
    "value_median": Recipe(
        _val_rule("value_median", "range: {gte: 40, lte: 60}"),
        [_value("a", 0, 100), _value("b", 0, 0)],
        "endpoint_host",
    ),
    "value_percentile": Recipe(
        _val_rule("value_percentile", "range: {gte: 40, lte: 60}, percentile: 50"),
        [_value("a", 0, 100), _value("b", 0, 0), _value("c", 0, 50)],
        "endpoint_host",
    ),
}


def _spread(
    events: list[dict[str, Any]], last_at: float, base: float = 1000.0
) -> list[dict[str, Any]]:
    """The events evenly spread from ``base`` to ``base + last_at`` in event time."""
    n = len(events)
    return [{**e, "ts": base + last_at * i / (n - 1)} for i, e in enumerate(events)]


def _type_cases() -> list[Case]:
    cases: list[Case] = []
    for ctype, r in RECIPES.items():
        ids = [e["event_id"] for e in r.events]
        inside = _spread(r.events, SPAN / 2)
        rotated = inside[1:] + inside[:1]  # the earliest event arrives last
        other_group = [{**inside[0], r.group: "somewhere-else"}, *inside[1:]]
        cases += [
            Case(f"{ctype}: all events in the window fire", r.rule, inside, [ids]),
            Case(
                f"{ctype}: first to last exactly timespan (inclusive)",
                r.rule,
                _spread(r.events, SPAN),
                [ids],
            ),
            Case(
                f"{ctype}: first to last just over timespan",
                r.rule,
                _spread(r.events, SPAN + 0.5),
                [],
            ),
            Case(f"{ctype}: one event short does not fire", r.rule, inside[:-1], []),
            Case(f"{ctype}: group-by keeps groups apart", r.rule, other_group, []),
            Case(f"{ctype}: earliest event arriving last still counts", r.rule, rotated, [ids]),
            Case(
                f"{ctype}: earliest event arriving beyond the allowed lateness is dead-lettered",
                r.rule,
                rotated,
                [],
                late=[ids[0]],
                limits=Limits(allowed_lateness_s=SPAN / 4),
            ),
        ]
    return cases


TYPE_CASES = _type_cases()


@pytest.mark.parametrize("case", TYPE_CASES, ids=[c.name for c in TYPE_CASES])
def test_every_correlation_type(case: Case) -> None:
    test_correlation_table(case)


def test_every_spec_correlation_type_has_a_recipe() -> None:
    from tmsp_correlator.domain.rules import CORRELATION_TYPES

    assert set(RECIPES) == set(CORRELATION_TYPES)


CHAIN_ORDERED = (
    EVENT_COUNT
    + "---\n"
    + corr(
        "  type: temporal_ordered\n  rules: [corr, lateral]\n  group-by: [Hostname]\n  timespan: 1h\n",
        name="outer",
    )
)


@pytest.mark.parametrize(
    ("events", "fires"),
    [
        (
            [high("a", 0), high("b", 10), high("c", 20), ev("l", 600, threat_category="lateral")],
            True,
        ),
        (
            [ev("l", 0, threat_category="lateral"), high("a", 600), high("b", 610), high("c", 620)],
            False,
        ),
        ([high("a", 0), high("b", 10), ev("l", 600, threat_category="lateral")], False),
        (
            [
                high("a", 0),
                high("b", 10),
                high("c", 20),
                ev("l", 600, threat_category="lateral", endpoint_host="h2"),
            ],
            False,
        ),
    ],
    ids=["burst then lateral", "lateral then burst", "no burst", "lateral on another host"],
)
def test_correlation_of_a_correlation_and_a_detection(
    events: list[dict[str, Any]], fires: bool
) -> None:
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", CHAIN_ORDERED)])
    assert rs.rejected == []
    mc = MemoryCorrelator(rs, Limits(allowed_lateness_s=3600))
    for e in events:
        mc.process(e)
    outer = [i for i in mc.incidents.values() if i["rule_ids"][0] == "outer"]
    assert bool(outer) is fires
    if fires:
        (inner,) = [i for i in mc.incidents.values() if i["rule_ids"][0] == "corr"]
        assert sorted(outer[0]["event_ids"]) == sorted([inner["id"], "l"])


class OneGroup:
    """The hits of correlation ``corr`` applied to one running group state."""

    def __init__(self, rule: str) -> None:
        self.rules = load_rules([("det.yml", DETECTIONS), ("corr.yml", rule)])
        self.limits = Limits(allowed_lateness_s=60)
        self.state: Any = None

    def feed(self, event: dict[str, Any]) -> Any:
        (hit,) = [h for h in hits_for_event(self.rules, event) if h["c"] == "corr"]
        self.state, out = apply_hit(self.rules, self.state, hit, self.limits)
        return out


@pytest.fixture
def aggregate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The window sizes the correlation condition is evaluated over, call by call."""
    from tmsp_correlator.domain import correlation

    calls: list[int] = []
    inner = correlation._aggregate_ok

    def counted(c: Any, window: list[list[Any]]) -> bool:
        calls.append(len(window))
        return inner(c, window)

    monkeypatch.setattr(correlation, "_aggregate_ok", counted)
    return calls


@pytest.mark.python_build
def test_a_sequence_waiting_for_its_second_rule_is_not_scanned_per_event(
    aggregate_calls: list[int],
) -> None:
    """temporal_ordered (c2 then lateral): while the group's window holds no lateral event,
    no window is evaluated however many c2 events arrive; the first lateral one fires; once
    the c2 events left the window (timespan + lateness), a lateral event is not evaluated
    either. The counts behind this are rebuilt when a state comes back without them."""
    import json

    calls = aggregate_calls
    rule = corr(
        "  type: temporal_ordered\n  rules: [c2, lateral]\n  group-by: [Hostname]\n"
        "  timespan: 10m\n"
    )
    group = OneGroup(rule)
    feed = group.feed

    for i in range(50):
        assert feed(ev(f"c{i}", i, threat_category="c2")).incident is None
    assert calls == []
    kept = {k: v for k, v in group.state.items() if k in ("w", "max", "inc")}
    group.state = json.loads(json.dumps(kept))
    out = feed(ev("l1", 60, threat_category="lateral"))
    assert out.new_incident and out.incident is not None
    assert calls and out.incident["count"] == 51
    calls.clear()
    feed(ev("l2", 2000, threat_category="lateral"))  # every c2 event is past the horizon
    assert calls == []
    # both rules present again (in the wrong order): evaluated, and no incident
    assert feed(ev("c99", 2001, threat_category="c2")).incident is None
    assert calls == [2]
    assert feed(ev("l3", 2002, threat_category="lateral")).new_incident


@pytest.mark.python_build
def test_a_scan_short_of_distinct_targets_is_not_scanned_per_event(
    aggregate_calls: list[int],
) -> None:
    """value_count (20 distinct destinations from one source): while the group's window has
    fewer distinct values than the condition needs, no window is evaluated, however many
    events repeat the same few; the 20th distinct one fires; counts of values that left the
    window are dropped."""
    calls = aggregate_calls
    rule = corr(
        "  type: value_count\n  rules: [high]\n  group-by: [src_ip]\n  timespan: 10m\n"
        "  condition: {gte: 20, field: dst_ip}\n"
    )
    group = OneGroup(rule)

    def feed(eid: str, t: float, dst: str) -> Any:
        return group.feed(high(eid, t, source_ip="10.0.0.5", destination_ip=dst))

    for i in range(300):
        assert feed(f"r{i}", i, f"10.0.1.{i % 3}").incident is None
    assert calls == []
    for j in range(3, 19):
        assert feed(f"d{j}", 300 + j, f"10.0.1.{j}").incident is None
    assert calls == []  # 19 distinct: still short
    out = feed("d19", 330, "10.0.1.19")
    assert out.new_incident and calls
    calls.clear()
    # long after: the old destinations left the window, one new one is far from 20
    assert feed("late-1", 5000, "10.0.2.1").incident is None
    assert calls == []


@pytest.mark.parametrize(
    "condition",
    ["{gte: 3}", "{gt: 3}", "{gt: 2.5}", "{gte: 2.5}", "{gt: 1, gte: 4}", "{gte: 0}", "{gt: 0.2}"],
)
def test_distinct_values_needed_is_the_least_count_for_which_the_condition_holds(
    condition: str,
) -> None:
    """The scan's early stop and shortcut count distinct values up to a precomputed number;
    for every gt/gte condition (fractional bounds too) it is the least count (at least one
    value) that the condition itself accepts, and a window of that many distinct targets
    fires while one short of it does not."""
    body = (
        "  type: value_count\n  rules: [high]\n  group-by: [src_ip]\n  timespan: 10m\n"
        f"  condition: {condition[:-1]}, field: dst_ip}}\n"
    )
    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", corr(body))])
    rule = rs.correlations["corr"]
    assert rule.grows_with_distinct_values
    least = next(n for n in range(1, 100) if rule.condition.holds(n))
    assert rule.distinct_values_needed == least

    def incidents(distinct: int) -> int:
        mc = MemoryCorrelator(rs)
        for i in range(distinct):
            mc.process(high(f"e{i}", i, source_ip="10.0.0.5", destination_ip=f"10.0.1.{i}"))
        return sum(1 for inc in mc.incidents.values() if inc["rule_ids"][0] == "corr")

    assert incidents(least) == 1
    assert incidents(least - 1) == 0


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["host485", "10.1.2.3"],
        ["a b ~!#$%&'()*+,-./:;<=>?@[]^_`{|}"],
        ['say "hi"'],
        ["back\\slash"],
        ['a","b'],
        ["tab\there", "nul\x00", "del\x7f"],
        ["héllo", "中文", "\U0001f600"],
    ],
)
def test_group_keys_keep_their_json_format(values: list[str]) -> None:
    """Window states are keyed by group key since the first release: the group-by values
    are compact ASCII-escaped JSON, whichever way the key is built."""
    assert (
        group_key("acc", "corr", values) == f"acc|corr|{json.dumps(values, separators=(',', ':'))}"
    )


def test_group_keys_keep_their_json_format_for_random_values() -> None:
    rnd = random.Random(5)
    pieces = [
        "a",
        "Z",
        "0",
        " ",
        '"',
        "\\",
        "\x00",
        "\x1f",
        "\x7f",
        "é",
        "中",
        "/",
        "[",
        "]",
        '","',
    ]
    for _ in range(5000):
        values = [
            "".join(rnd.choice(pieces) for _ in range(rnd.randrange(6)))
            for _ in range(rnd.randrange(4))
        ]
        expected = json.dumps(values, separators=(",", ":"))
        assert group_key("acc", "corr", values) == f"acc|corr|{expected}", values


def test_idle_groups_are_those_no_hit_changed_for_the_idle_time() -> None:
    now = 1_000_000.0
    states = [
        ("fresh", {"w": [], SEEN: now - 10}),
        ("edge", {"w": [], SEEN: now - 100}),
        ("old", {"w": [[1.0]], SEEN: now - 5000}),
        ("legacy", {"w": [[1.0]], "max": 1.0}),
    ]
    idle, unstamped = idle_groups(states, now, 100)
    assert idle == ["edge", "old"]
    # a state from before stamps is not forgotten at once: its idle time starts now
    assert unstamped == ["legacy"]
    assert idle_groups(states, now, 6000) == ([], ["legacy"])

# ruff: noqa: E501  (rule tables read best one case per line)
"""Correlation semantics as tables: events in, incidents out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tmsp_correlator.domain.correlation import Limits, MemoryCorrelator, apply_hit, hits_for_event
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


def test_state_survives_json_round_trip() -> None:
    """The state is what a faust table stores: it must survive serialisation mid-window."""
    import json

    rs = load_rules([("det.yml", DETECTIONS), ("corr.yml", EVENT_COUNT)])
    limits = Limits()
    state = None
    outs = []
    for e in [high("a", 0), high("b", 10), high("c", 20)]:
        (hit,) = [h for h in hits_for_event(rs, e) if h["c"] == "corr"]
        state, out = apply_hit(rs, json.loads(json.dumps(state)) if state else None, hit, limits)
        outs.append(out)
    assert outs[-1].new_incident


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

# ruff: noqa: E501  (scenario tables read best one case per line)
"""The default rule pack: each rule fires on its scenario and carries ATT&CK tags and actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tmsp_correlator.config import DEFAULT_RULES_DIR
from tmsp_correlator.domain.correlation import MemoryCorrelator
from tmsp_correlator.domain.rules import RuleSet, load_rule_directory

PACK = Path(DEFAULT_RULES_DIR)


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    rs = load_rule_directory(PACK)
    assert rs.rejected == []
    return rs


def tda(eid: str, t: float, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_type": "detection",
        "product_kind": "threat_discovery_appliance",
        "account_id": "acc",
        "endpoint_host": "pc1",
        "severity": "medium",
        "event_id": eid,
        "ts": t,
    }
    e.update(kw)
    return e


def tm(eid: str, t: float, outcome: str, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_type": "mitigation",
        "product_kind": "threat_mitigator",
        "account_id": "acc",
        "endpoint_host": "pc1",
        "threat_name": "TROJ_X",
        "outcome": outcome,
        "event_id": eid,
        "ts": t,
    }
    e.update(kw)
    return e


def names(rs: RuleSet, mc: MemoryCorrelator) -> set[str]:
    return {rs.meta(i["rule_ids"][0]).name for i in mc.incidents.values()}


SCENARIOS = [
    (
        "burst",
        [tda(f"h{i}", i * 60, severity="high", threat_name=f"T{i}") for i in range(3)],
        "tmsp_high_severity_burst",
    ),
    (
        "c2 then lateral",
        [
            tda("c", 0, category="x", threat_category="C2 callback", threat_name="BEACON"),
            tda("l", 600, threat_category="lateral movement", threat_name="PSEXEC"),
        ],
        "tmsp_c2_then_lateral",
    ),
    (
        "detected then mitigation failed",
        [tda("d", 0, threat_name="TROJ_X"), tm("m", 3600, "failed")],
        "tmsp_detected_then_mitigation_failed",
    ),
    ("mitigation failed alone", [tm("m", 0, "unresolved")], "tmsp_mitigation_failed"),
    (
        "outbreak",
        [tda(f"o{i}", i, threat_name="WORM_Y", endpoint_host=f"pc{i}") for i in range(5)],
        "tmsp_outbreak",
    ),
    (
        "internal scan",
        [
            tda(f"s{i}", i, source_ip="10.0.0.5", destination_ip=f"10.0.1.{i}", endpoint_host="")
            for i in range(20)
        ],
        "tmsp_internal_scan",
    ),
    (
        "critical",
        [tda("x", 0, severity="critical", threat_name="RANSOM_Z")],
        "tmsp_critical_detection",
    ),
    (
        "persistent compromise (chained)",
        [tda(f"a{i}", i * 60, severity="high") for i in range(3)]
        + [tda(f"b{i}", 7200 + i * 60, severity="high") for i in range(3)],
        "tmsp_persistent_compromise",
    ),
]


@pytest.mark.parametrize(("name", "events", "rule"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_fires_its_rule(
    pack: RuleSet, name: str, events: list[dict[str, Any]], rule: str
) -> None:
    mc = MemoryCorrelator(pack)
    for e in events:
        mc.process(e)
    assert rule in names(pack, mc), name
    (inc,) = [i for i in mc.incidents.values() if pack.meta(i["rule_ids"][0]).name == rule]
    assert inc["tags"], "ATT&CK tags"
    assert all(t.startswith("attack.") for t in inc["tags"])
    assert inc["actions"], "recommended actions"


def test_quiet_traffic_raises_nothing(pack: RuleSet) -> None:
    mc = MemoryCorrelator(pack)
    for i in range(10):
        mc.process(
            tda(f"q{i}", i * 3600, severity="low", threat_name="ADW_Z", endpoint_host=f"pc{i}")
        )
    mc.process(tm("ok", 0, "cleaned"))
    assert mc.incidents == {}


def test_lateral_before_c2_is_not_the_ordered_rule(pack: RuleSet) -> None:
    mc = MemoryCorrelator(pack)
    mc.process(tda("l", 0, threat_category="lateral"))
    mc.process(tda("c", 60, threat_category="c2"))
    assert "tmsp_c2_then_lateral" not in names(pack, mc)

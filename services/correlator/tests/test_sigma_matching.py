# ruff: noqa: E501  (rule tables read best one case per line)
"""Detection rule semantics: modifiers, conditions, field mapping, the rule index."""

from __future__ import annotations

from typing import Any

import pytest

from tmsp_correlator.domain.rules import load_rules

BASE: dict[str, Any] = {
    "event_type": "detection",
    "product_kind": "threat_discovery_appliance",
    "severity": "high",
    "threat_name": "TROJ_Agent.XyZ",
    "source_ip": "10.1.2.3",
    "destination_ip": "203.0.113.9",
    "destination_port": 4444,
    "endpoint_host": "WEB01",
    "url": "http://evil.example/a.exe",
    "user": "",
    "file_hash": "ABCDEF",
}


def rule(detection: str, logsource: str = "{product: tda, category: detection}") -> str:
    return f"""
title: test rule
name: r
logsource: {logsource}
level: high
detection:
{detection}
"""


CASES = [
    (
        "plain equality, case-insensitive",
        "  s:\n    ThreatName: troj_agent.xyz\n  condition: s",
        {},
        True,
    ),
    ("equality mismatch", "  s:\n    ThreatName: other\n  condition: s", {}, False),
    ("list is OR", "  s:\n    severity: [low, high]\n  condition: s", {}, True),
    ("contains", "  s:\n    ThreatName|contains: agent\n  condition: s", {}, True),
    ("contains all", "  s:\n    ThreatName|contains|all: [troj, xyz]\n  condition: s", {}, True),
    (
        "contains all one missing",
        "  s:\n    ThreatName|contains|all: [troj, nope]\n  condition: s",
        {},
        False,
    ),
    ("startswith", "  s:\n    Hostname|startswith: web\n  condition: s", {}, True),
    ("endswith", "  s:\n    Url|endswith: .exe\n  condition: s", {}, True),
    ("wildcard", "  s:\n    Hostname: 'w?b*'\n  condition: s", {}, True),
    ("wildcard mismatch", "  s:\n    Hostname: 'x*'\n  condition: s", {}, False),
    ("regex", "  s:\n    Url|re: '^http://[a-z]+\\.example/'\n  condition: s", {}, True),
    ("regex is case-sensitive", "  s:\n    ThreatName|re: '^troj'\n  condition: s", {}, False),
    ("cidr", "  s:\n    src_ip|cidr: 10.0.0.0/8\n  condition: s", {}, True),
    ("cidr outside", "  s:\n    src_ip|cidr: 192.168.0.0/16\n  condition: s", {}, False),
    # a list of networks is one test: the address parsed once, any network containing it
    (
        "cidr list",
        "  s:\n    src_ip|cidr: [192.168.0.0/16, '2001:db8::/32', 10.1.0.0/16]\n  condition: s",
        {},
        True,
    ),
    (
        "cidr list miss",
        "  s:\n    src_ip|cidr: [192.168.0.0/16, 10.2.0.0/16]\n  condition: s",
        {},
        False,
    ),
    (
        "cidr list, IPv6 address",
        "  s:\n    src_ip|cidr: [10.0.0.0/8, '2001:db8::/32']\n  condition: s",
        {"source_ip": "2001:db8::7"},
        True,
    ),
    (
        "cidr list, not an address",
        "  s:\n    src_ip|cidr: [10.0.0.0/8, 0.0.0.0/0]\n  condition: s",
        {"source_ip": "not-an-ip"},
        False,
    ),
    (
        "cidr list, field missing",
        "  s:\n    src_ip|cidr: [10.0.0.0/8, 0.0.0.0/0]\n  condition: s",
        {"source_ip": None},
        False,
    ),
    ("gte", "  s:\n    dst_port|gte: 4444\n  condition: s", {}, True),
    ("gt", "  s:\n    dst_port|gt: 4444\n  condition: s", {}, False),
    ("lt", "  s:\n    dst_port|lt: 5000\n  condition: s", {}, True),
    ("lte", "  s:\n    dst_port|lte: 4443\n  condition: s", {}, False),
    ("number equality", "  s:\n    dst_port: 4444\n  condition: s", {}, True),
    ("number list", "  s:\n    dst_port: [80, 4444]\n  condition: s", {}, True),
    ("number list miss", "  s:\n    dst_port: [80, 443]\n  condition: s", {}, False),
    # a number compares as a number, in a list as alone: "04444" and 4444.0 are 4444
    (
        "number as text",
        "  s:\n    dst_port: 4444\n  condition: s",
        {"destination_port": "04444"},
        True,
    ),
    (
        "number list, value as text",
        "  s:\n    dst_port: [80, 4444]\n  condition: s",
        {"destination_port": "04444"},
        True,
    ),
    (
        "number list, value a float",
        "  s:\n    dst_port: [80, 4444]\n  condition: s",
        {"destination_port": 4444.0},
        True,
    ),
    ("null matches empty", "  s:\n    User: null\n  condition: s", {}, True),
    (
        "not",
        "  s:\n    severity: high\n  f:\n    Hostname: WEB01\n  condition: s and not f",
        {},
        False,
    ),
    ("or", "  a:\n    severity: low\n  b:\n    Hostname: web01\n  condition: a or b", {}, True),
    (
        "parentheses",
        "  a:\n    severity: low\n  b:\n    Hostname: web01\n  c:\n    dst_port: 1\n  condition: (a or b) and not c",
        {},
        True,
    ),
    (
        "1 of selection*",
        "  sel_a:\n    severity: low\n  sel_b:\n    Hostname: web01\n  condition: 1 of sel_*",
        {},
        True,
    ),
    (
        "all of selection*",
        "  sel_a:\n    severity: low\n  sel_b:\n    Hostname: web01\n  condition: all of sel_*",
        {},
        False,
    ),
    ("keyword", "  keywords:\n    - evil.example\n  condition: keywords", {}, True),
    (
        "unmapped field passes through",
        "  s:\n    extra.rule: x1\n  condition: s",
        {"extra.rule": "X1"},
        True,
    ),
    ("missing field never equals", "  s:\n    protocol: tcp\n  condition: s", {}, False),
]


@pytest.mark.parametrize(
    ("name", "detection", "overrides", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_detection_semantics(
    name: str, detection: str, overrides: dict[str, Any], expected: bool
) -> None:
    rs = load_rules([("r.yml", rule(detection))])
    assert rs.rejected == []
    event = {**BASE, **overrides}
    assert bool(rs.match(event)) is expected, name


def test_logsource_selects_product_and_category() -> None:
    rs = load_rules(
        [
            (
                "r.yml",
                rule(
                    "  s:\n    severity: high\n  condition: s",
                    "{product: tm, category: mitigation}",
                ),
            )
        ]
    )
    assert rs.match(BASE) == []
    assert rs.match({**BASE, "event_type": "mitigation", "product_kind": "threat_mitigator"})


def test_index_checks_only_rules_that_can_match() -> None:
    docs = []
    for i in range(50):
        docs.append(
            f"title: r{i}\nname: r{i}\nlogsource: {{product: tda}}\nlevel: low\n"
            f"detection:\n  s:\n    ThreatName: threat{i}\n    dst_port|gt: 1\n  condition: s\n"
        )
    docs.append(
        "title: net\nname: net\nlogsource: {product: tda}\nlevel: low\n"
        "detection:\n  s:\n    src_ip|cidr: 10.0.0.0/8\n  condition: s\n"
    )
    rs = load_rules([("many.yml", "---\n".join(docs))])
    event = {**BASE, "threat_name": "THREAT7"}
    from tmsp_correlator.domain.sigma_compiler import lowered

    candidates = {r.meta.name for r in rs.candidates(event, lowered(event))}
    assert candidates == {"r7", "net"}
    assert {r.meta.name for r in rs.match(event)} == {"r7", "net"}


BAD = [
    ("no-detection.yml", "title: x\nlogsource: {product: tda}\n", "detection"),
    ("bad-yaml.yml", "title: [unclosed\n", "invalid YAML"),
    ("bad-modifier.yml", rule("  s:\n    Hostname|nosuchmod: a\n  condition: s"), "nosuchmod"),
    (
        "bad-product.yml",
        rule("  s:\n    Hostname: a\n  condition: s", "{product: windows}"),
        "windows",
    ),
    ("bad-cond.yml", rule("  s:\n    Hostname: a\n  condition: s and missing"), "missing"),
    (
        "unknown-ref.yml",
        "title: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [nope]\n"
        "  timespan: 5m\n  condition: {gte: 2}\n",
        "nope",
    ),
    (
        "bad-type.yml",
        "title: c2\nname: c2\ncorrelation:\n  type: wrong\n  rules: [good]\n  timespan: 5m\n"
        "  condition: {gte: 2}\n",
        "wrong",
    ),
    (
        "bad-timespan.yml",
        "title: c3\nname: c3\ncorrelation:\n  type: event_count\n  rules: [good]\n"
        "  timespan: soon\n  condition: {gte: 2}\n",
        "soon",
    ),
]


def test_bad_rules_are_rejected_with_file_and_reason_and_the_rest_run() -> None:
    good = rule("  s:\n    severity: high\n  condition: s").replace("name: r", "name: good")
    rs = load_rules([("good.yml", good), *[(f, t) for f, t, _ in BAD]])
    rejected = {r.file: r.reason for r in rs.rejected}
    for file, _text, needle in BAD:
        assert file in rejected, file
        assert needle.lower() in rejected[file].lower(), (file, rejected[file])
    assert [r.meta.name for r in rs.match(BASE)] == ["good"]


def test_reference_cycle_is_rejected() -> None:
    text = (
        "title: a\nname: a\ncorrelation:\n  type: event_count\n  rules: [b]\n  timespan: 5m\n"
        "  condition: {gte: 1}\n---\n"
        "title: b\nname: b\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5m\n"
        "  condition: {gte: 1}\n"
    )
    rs = load_rules([("cycle.yml", text)])
    assert {r.rule for r in rs.rejected} == {"a", "b"}
    assert all("cycle" in r.reason for r in rs.rejected)

"""The rule index: which rules an event is checked against, and that it never loses a match.

The index keys each rule on a necessary condition of its predicate (required literal,
network, pattern or field); :meth:`RuleSet.candidates` must yield a superset of the rules
that match, and :meth:`RuleSet.match` must equal evaluating every rule of the log source.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_network
from typing import Any

import pytest

from tmsp_correlator.domain.rules import DetectionRule, RuleSet, load_rules
from tmsp_correlator.domain.sigma_compiler import RequiredNetwork, RequiredPattern, lowered

EVENT: dict[str, Any] = {
    "event_type": "detection",
    "product_kind": "threat_discovery_appliance",
    "severity": "low",
    "threat_name": "Generic",
    "endpoint_host": "pc",
    "url": "http://example.test/index.html",
    "source_ip": "192.0.2.1",
    "destination_port": 443,
}


def doc(name: str, detection: str, logsource: str = "{product: tda, category: detection}") -> str:
    return (
        f"title: {name}\nname: {name}\nlogsource: {logsource}\nlevel: low\n"
        f"detection:\n{detection}\n"
    )


def ruleset(*docs: str) -> RuleSet:
    rs = load_rules([("rules.yml", "---\n".join(docs))])
    assert rs.rejected == []
    return rs


def names(rules: Any) -> set[str]:
    return {r.meta.name for r in rules}


def candidates(rs: RuleSet, event: dict[str, Any]) -> set[str]:
    return names(rs.candidates(event, lowered(event)))


def counting(rs: RuleSet) -> dict[str, int]:
    """Wrap every predicate of ``rs`` to count its calls (per rule name); rebuilds the index."""
    calls: dict[str, int] = {}

    def wrap(rule: DetectionRule) -> DetectionRule:
        inner = rule.compiled.predicate
        name = rule.meta.name

        def pred(e: dict[str, Any], lo: dict[str, Any]) -> bool:
            calls[name] = calls.get(name, 0) + 1
            return inner(e, lo)

        return replace(rule, compiled=replace(rule.compiled, predicate=pred))

    rs.detections = {rid: wrap(r) for rid, r in rs.detections.items()}
    rs.build_index()
    return calls


def test_index_evaluates_only_substring_and_network_rules_that_can_match() -> None:
    docs = []
    for i in range(30):
        docs += [
            doc(f"contains{i}", f"  s:\n    ThreatName|contains: needle{i}x\n  condition: s"),
            doc(f"ends{i}", f"  s:\n    Url|endswith: /p{i}.exe\n  condition: s"),
            doc(f"starts{i}", f"  s:\n    Hostname|startswith: ws{i}-\n  condition: s"),
            doc(f"wild{i}", f"  s:\n    Hostname: '*-dept{i}-?-*'\n  condition: s"),
            doc(
                f"net{i}",
                f"  s:\n    src_ip|cidr: 10.{i}.0.0/16\n    dst_port|gt: 1\n  condition: s",
            ),
        ]
    rs = ruleset(*docs)
    for r in rs.detections.values():
        if r.meta.name.startswith("net"):
            assert isinstance(r.compiled.network, RequiredNetwork)
        else:
            assert isinstance(r.compiled.pattern, RequiredPattern)
    calls = counting(rs)
    event = {
        **EVENT,
        "threat_name": "TROJ_NEEDLE7X.gen",
        "url": "http://evil.test/dl/P12.EXE",
        "endpoint_host": "WS3-dept5-b-01",
        "source_ip": "10.21.4.5",
    }
    expected = {"contains7", "ends12", "starts3", "wild5", "net21"}
    assert {r.meta.name for r in rs.match(event)} == expected
    assert calls == dict.fromkeys(expected, 1)
    calls.clear()
    assert rs.match(EVENT) == []
    assert calls == {}


Example = tuple[str, tuple[str, ...], dict[str, Any], set[str], set[str]]
"""name, rules, event fields, expected candidates, expected matches."""


def _index_examples() -> list[Example]:
    overlap = (
        doc("foo", "  s:\n    ThreatName|contains: foo\n  condition: s"),
        doc("foobar", "  s:\n    ThreatName|contains: FooBar\n  condition: s"),
        doc("bar_end", "  s:\n    ThreatName|endswith: bar\n  condition: s"),
    )
    nets = (
        doc("v6", "  s:\n    src_ip|cidr: '2001:db8::/32'\n  condition: s"),
        doc("v6_ula", "  s:\n    src_ip|cidr: 'fd00::/8'\n  condition: s"),
        doc("v4", "  s:\n    src_ip|cidr: 10.0.0.0/8\n  condition: s"),
        doc("v4_host", "  s:\n    src_ip|cidr: 10.1.2.3/32\n  condition: s"),
    )
    every = {"foo", "foobar", "bar_end"}
    return [
        ("case-insensitive", overlap, {"threat_name": "xFOOBARy"}, every, {"foo", "foobar"}),
        ("overlapping: shorter only", overlap, {"threat_name": "a_foob"}, {"foo"}, {"foo"}),
        ("overlapping: every one", overlap, {"threat_name": "FOOBAR"}, every, every),
        ("no substring", overlap, {"threat_name": "fo_ob_ar"}, set(), set()),
        ("ipv6 cidr", nets, {"source_ip": "2001:DB8::5"}, {"v6"}, {"v6"}),
        (
            "ipv4 nested prefixes",
            nets,
            {"source_ip": "10.1.2.3"},
            {"v4", "v4_host"},
            {"v4", "v4_host"},
        ),
        ("ipv4 not in ipv6", nets, {"source_ip": "10.9.9.9"}, {"v4"}, {"v4"}),
        ("non-ip value", nets, {"source_ip": "not-an-ip"}, set(), set()),
        ("empty ip value", nets, {"source_ip": ""}, set(), set()),
        ("number as ip", nets, {"source_ip": 167772161}, set(), set()),
    ]


@pytest.mark.parametrize(
    ("name", "docs", "overrides", "expected_candidates", "expected_matches"),
    _index_examples(),
    ids=[e[0] for e in _index_examples()],
)
def test_index_candidates_and_matches(
    name: str,
    docs: tuple[str, ...],
    overrides: dict[str, Any],
    expected_candidates: set[str],
    expected_matches: set[str],
) -> None:
    rs = ruleset(*docs)
    event = {**EVENT, **overrides}
    assert candidates(rs, event) == expected_candidates, name
    assert names(rs.match(event)) == expected_matches, name


def test_index_event_without_the_field_evaluates_nothing() -> None:
    rs = ruleset(
        doc("pat", "  s:\n    ThreatName|contains: foo\n  condition: s"),
        doc("net", "  s:\n    src_ip|cidr: 10.0.0.0/8\n  condition: s"),
        doc("wild", "  s:\n    Hostname: 'a*b'\n  condition: s"),
    )
    calls = counting(rs)
    event = {"event_type": "detection", "product_kind": "threat_discovery_appliance"}
    assert rs.match(event) == []
    assert calls == {}


REQUIREMENTS = [
    ("contains", "ThreatName|contains: Foo", ("threat_name", {"foo"})),
    ("startswith list", "Url|startswith: [Http://, ftp://]", ("url", {"http://", "ftp://"})),
    ("wildcard: longest fragment", "Hostname: 'ab*cdef?gh'", ("endpoint_host", {"cdef"})),
    ("escaped star is literal", "Hostname: 'a\\*bcd*x'", ("endpoint_host", {"a*bcd"})),
    ("only wildcards", "Hostname: '*?*'", None),
    ("regex has none", "Url|re: 'evil.*'", None),
    ("cased has none", "ThreatName|cased|contains: Foo", None),
    ("number has none", "dst_port: 80", None),
    ("windash: every variant", "CommandLine|windash|contains: -enc", ("CommandLine", None)),
]


@pytest.mark.parametrize(
    ("name", "selection", "expected"), REQUIREMENTS, ids=[r[0] for r in REQUIREMENTS]
)
def test_required_pattern_of_one_value(
    name: str, selection: str, expected: tuple[str, set[str] | None] | None
) -> None:
    rs = ruleset(doc("r", f"  s:\n    {selection}\n  condition: s"))
    pattern = next(iter(rs.detections.values())).compiled.pattern
    if expected is None:
        assert pattern is None, name
        return
    assert pattern is not None, name
    assert pattern.field == expected[0]
    if expected[1] is not None:
        assert pattern.substrings == frozenset(expected[1])
    else:
        assert len(pattern.substrings) > 1
        assert all("enc" in s for s in pattern.substrings)


def test_required_pattern_and_network_through_conditions() -> None:
    def compiled(detection: str) -> Any:
        return next(iter(ruleset(doc("r", detection)).detections.values())).compiled

    both = compiled(
        "  a:\n    ThreatName|contains: ab\n  b:\n    ThreatName|contains: abcdef\n"
        "  condition: a and b"
    )
    assert both.pattern == RequiredPattern("threat_name", frozenset({"abcdef"}))
    either = compiled(
        "  a:\n    Url|endswith: .exe\n  b:\n    Url: 'http://x/*.dll'\n  condition: a or b"
    )
    assert either.pattern == RequiredPattern("url", frozenset({".exe", "http://x/"}))
    assert compiled("  a:\n    Url|contains: x\n  condition: not a").pattern is None
    mixed = compiled(
        "  a:\n    Url|contains: x\n  b:\n    ThreatName|contains: y\n  condition: a or b"
    )
    assert mixed.pattern is None
    nets = compiled(
        "  a:\n    src_ip|cidr: [10.0.0.0/8, '2001:db8::/32']\n"
        "  b:\n    dst_ip|cidr: 192.168.1.0/24\n  condition: a and b"
    )
    assert nets.network == RequiredNetwork(
        "destination_ip", frozenset({ip_network("192.168.1.0/24")})
    )
    assert compiled("  a:\n    src_ip|cidr: 10.0.0.0/8\n  condition: not a").network is None


def test_an_or_across_fields_is_indexed_under_each_branch() -> None:
    """``1 of by_*`` over two fields (the pack's C2 callback rule): checked only for events
    meeting one branch's key, once when they meet both; a branch without a key leaves the
    rule checked for every event."""
    c2 = doc(
        "c2",
        "  by_category:\n    Category|contains: [c2, botnet]\n"
        "  by_name:\n    ThreatName|contains: beacon\n  condition: 1 of by_*",
    )
    loose = doc(
        "loose",
        "  by_name:\n    ThreatName|contains: beacon\n"
        "  not_low:\n    severity: low\n  condition: by_name or not not_low",
    )
    rs = ruleset(c2, loose)
    compiled = {r.meta.name: r.compiled for r in rs.detections.values()}
    assert compiled["c2"].alternatives == (
        RequiredPattern("threat_category", frozenset({"c2", "botnet"})),
        RequiredPattern("threat_name", frozenset({"beacon"})),
    )
    assert compiled["loose"].alternatives is None
    calls = counting(rs)
    assert names(rs.match(EVENT)) == set()
    assert calls == {"loose": 1}
    for overrides, expected in (
        ({"threat_category": "Botnet-C2"}, {"c2"}),
        ({"threat_name": "Beacon.A"}, {"c2", "loose"}),
        ({"threat_category": "c2", "threat_name": "beacon"}, {"c2", "loose"}),
        ({"threat_category": "c-2", "threat_name": "beac0n"}, set()),
    ):
        calls.clear()
        assert names(rs.match({**EVENT, **overrides})) == expected, overrides
        assert calls.get("c2", 0) == (1 if expected else 0), overrides


def test_wildcard_values_fold_case_like_contains() -> None:
    """``S?x*`` and ``startswith: s`` agree on ``ſ`` (which re.IGNORECASE folds to s)."""
    rs = ruleset(
        doc("wild", "  s:\n    ThreatName: 'S?x*'\n  condition: s"),
        doc("starts", "  s:\n    ThreatName|startswith: s\n  condition: s"),
    )
    for value, expected in (("ſix", set()), ("SIX", {"wild", "starts"})):
        event = {**EVENT, "threat_name": value}
        low = lowered(event)
        evaluated = {
            r.meta.name for r in rs.detections.values() if r.compiled.predicate(event, low)
        }
        assert evaluated == expected, value
        assert names(rs.match(event)) == expected, value


# --- generated rules and events: the index against evaluating every rule ------------------

TOKENS = ["foo", "foobar", "bar", "Evil", "agent", "x1", "dl", "c2", "ab", "abc"]
HOST_TOKENS = ["web", "db", "ws", "01", "02", "dept"]
IPS = [
    "10.1.2.3",
    "10.1.9.9",
    "10.200.0.1",
    "192.168.1.20",
    "172.16.5.4",
    "203.0.113.9",
    "2001:db8::1",
    "2001:DB8:1::ff",
    "fd00::7",
    "::1",
    "not-an-ip",
    "",
    "10.1.2",
]
CIDRS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.168.0.0/16",
    "172.16.0.0/12",
    "'2001:db8::/32'",
    "'2001:db8:1::/48'",
    "'fd00::/8'",
    "0.0.0.0/0",
]
SOURCES = [
    "{product: tda, category: detection}",
    "{product: tm, category: mitigation}",
    "{product: tda}",
    "{category: detection}",
    "{product: tmsp}",
]


def _word(rnd: random.Random, tokens: list[str], n: int = 3) -> str:
    parts = [rnd.choice(tokens) for _ in range(rnd.randint(1, n))]
    text = rnd.choice(["", "_", "-", "/", "."]).join(parts)
    return "".join(c.upper() if rnd.random() < 0.3 else c for c in text)


def _text(rnd: random.Random, tokens: list[str], n: int = 3) -> str:
    """A YAML string of 1..n tokens (quoted: ``01`` would be a number)."""
    return f"'{_word(rnd, tokens, n)}'"


def _wildcard(rnd: random.Random, tokens: list[str]) -> str:
    pieces = [rnd.choice(["*", "?", ""]) + _word(rnd, tokens, 2) for _ in range(rnd.randint(1, 2))]
    return "'" + "".join(pieces) + rnd.choice(["*", "?", "", "*"]) + "'"


def _value(rnd: random.Random, tokens: list[str]) -> str:
    if rnd.random() < 0.3:
        return "[" + ", ".join(_text(rnd, tokens, 2) for _ in range(rnd.randint(2, 3))) + "]"
    return _text(rnd, tokens, 2)


FieldMaker = Callable[[random.Random], str]

TEXT_FIELDS = {"ThreatName": TOKENS, "Url": TOKENS, "Hostname": HOST_TOKENS}

MAKERS: list[FieldMaker] = [
    lambda r: f"{r.choice(list(TEXT_FIELDS))}: {_value(r, TOKENS + HOST_TOKENS)}",
    lambda r: f"ThreatName|contains: {_value(r, TOKENS)}",
    lambda r: f"ThreatName|contains|all: [{_text(r, TOKENS, 1)}, {_text(r, TOKENS, 1)}]",
    lambda r: f"Url|startswith: {_value(r, TOKENS)}",
    lambda r: f"Url|endswith: {_value(r, TOKENS)}",
    lambda r: f"Hostname|contains: {_value(r, HOST_TOKENS)}",
    lambda r: f"{r.choice(list(TEXT_FIELDS))}: {_wildcard(r, TOKENS + HOST_TOKENS)}",
    lambda r: f"ThreatName|cased|contains: {_text(r, TOKENS, 1)}",
    lambda r: f"Url|re: '{r.choice(['^foo', 'bar$', '(?i)evil', 'x[0-9]'])}'",
    lambda r: f"src_ip|cidr: {r.choice(CIDRS)}",
    lambda r: f"src_ip|cidr: [{r.choice(CIDRS)}, {r.choice(CIDRS)}]",
    lambda r: f"dst_ip|cidr: {r.choice(CIDRS)}",
    lambda r: f"dst_port|{r.choice(['gt', 'lt', 'gte'])}: {r.choice([100, 443, 8080])}",
    lambda r: f"dst_port: {r.choice([80, 443, 4444])}",
    lambda r: f"dst_port|{r.choice(['startswith', 'endswith'])}: '{r.choice(['44', '80', '3'])}'",
    lambda r: f"dst_port: '{r.choice(['*4', '4?3', '8*'])}'",
    lambda r: f"severity: {r.choice(['low', 'high', '[high, critical]'])}",
    lambda r: f"User: {r.choice(['null', 'admin'])}",
    lambda r: f"User|exists: {r.choice(['true', 'false'])}",
    lambda r: f"CommandLine|windash|contains: {r.choice(['-enc', '-nop'])}",
]

CONDITIONS = [
    "s1",
    "s1",
    "s1 and s2",
    "s1 or s2",
    "s1 and not s2",
    "not s1",
    "1 of s*",
    "all of s*",
    "(s1 or s2) and s3",
    "s1 or (s2 and not s3)",
]


def _generated_rules(rnd: random.Random, n: int) -> list[str]:
    docs = []
    for i in range(n):
        cond = rnd.choice(CONDITIONS)
        body = ""
        for sel in ("s1", "s2", "s3"):
            lines = [rnd.choice(MAKERS)(rnd) for _ in range(rnd.choice([1, 1, 2]))]
            if rnd.random() < 0.15:
                body += f"  {sel}:\n" + "".join(f"    - {line}\n" for line in lines)
            else:
                body += f"  {sel}:\n" + "".join(f"    {line}\n" for line in lines)
        if rnd.random() < 0.05:
            body += f"  keywords:\n    - {_text(rnd, TOKENS, 1)}\n"
            cond = f"{cond} or keywords"
        docs.append(doc(f"gen{i}", body + f"  condition: {cond}", rnd.choice(SOURCES)))
    return docs


def _generated_event(rnd: random.Random) -> dict[str, Any]:
    kind = rnd.choice(
        [("detection", "threat_discovery_appliance"), ("mitigation", "threat_mitigator")]
    )
    event: dict[str, Any] = {"event_type": kind[0], "product_kind": kind[1]}
    makers: dict[str, Callable[[], Any]] = {
        "threat_name": lambda: _word(rnd, TOKENS),
        "url": lambda: "http://" + _word(rnd, TOKENS) + "/" + _word(rnd, TOKENS),
        "endpoint_host": lambda: _word(rnd, HOST_TOKENS),
        "source_ip": lambda: rnd.choice(IPS),
        "destination_ip": lambda: rnd.choice(IPS),
        "destination_port": lambda: rnd.choice([80, 443, 4444, 8080, "443", "0443", 443.0, 0]),
        "severity": lambda: rnd.choice(["low", "HIGH", "critical", ""]),
        "user": lambda: rnd.choice(["", "admin", "Admin"]),
        "CommandLine": lambda: rnd.choice(["ps -enc x", "ps /nop", "ps –enc", "none"]),
    }
    for name, make in makers.items():
        if rnd.random() < 0.85:
            event[name] = make()
    return event


def _brute_force(rs: RuleSet, event: dict[str, Any]) -> set[str]:
    """Every detection rule of the event's log source, evaluated: what the index must equal."""
    low = lowered(event)
    return {
        rid
        for rid, rule in rs.detections.items()
        if rule.event_type in ("", event["event_type"])
        and rule.product_kind in ("", event["product_kind"])
        and rule.compiled.predicate(event, low)
    }


def test_index_matches_exactly_what_evaluating_every_rule_does() -> None:
    rnd = random.Random(20240611)
    rs = ruleset(*_generated_rules(rnd, 400))
    keys = Counter(
        next(
            (
                k
                for k in ("literal", "network", "pattern", "field", "alternatives")
                if getattr(c, k)
            ),
            "none",
        )
        for c in (r.compiled for r in rs.detections.values())
    )
    assert min(keys.values()) > 10 and len(keys) == 6, keys  # every kind of index key
    checked = evaluated = matched = 0
    for _ in range(600):
        event = _generated_event(rnd)
        expected = _brute_force(rs, event)
        got = [r.meta.rule_id for r in rs.match(event)]
        assert len(got) == len(set(got)), event
        assert set(got) == expected, event
        matched += len(expected)
        evaluated += len({r.meta.rule_id for r in rs.candidates(event, lowered(event))})
        checked += sum(
            r.event_type in ("", event["event_type"])
            and r.product_kind in ("", event["product_kind"])
            for r in rs.detections.values()
        )
    assert matched > 1000
    assert evaluated < checked * 2 / 3  # half the generated rules have no key: evaluated always

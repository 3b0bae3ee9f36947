"""Rules: Sigma detection and correlation rules loaded from a directory, checked, indexed.

Loading never stops at a bad rule: each file is parsed on its own (pySigma with
``collect_errors``); a rule that fails to parse, uses something the engine cannot evaluate,
or references an unknown rule is rejected with its file and reason (:class:`RuleRejection`)
while the rest run. Correlation rules that reference other correlations are resolved in
dependency order; cycles are rejected.

Sigma spec 2.1 correlation fields pySigma does not model (``condition`` ranges, i.e. two
operators at once) are read from the YAML directly.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from ahocorasick_rs import AhoCorasick
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

from tmsp_correlator.domain.fields import (
    CATEGORY_ALIASES,
    PRODUCT_ALIASES,
    Event,
    field_mapping_pipeline,
    map_field,
)
from tmsp_correlator.domain.sigma_compiler import (
    CompiledDetection,
    IndexKey,
    IPAddress,
    IPNetwork,
    RequiredLiteral,
    RequiredNetwork,
    RequiredPattern,
    UnsupportedRule,
    compile_rule,
    lowered,
    parse_ip,
)

CORRELATION_TYPES = (
    "event_count",
    "value_count",
    "temporal",
    "temporal_ordered",
    "value_sum",
    "value_avg",
    "value_percentile",
    "value_median",
)
OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")
LEVEL_SEVERITY = {
    "informational": "informational",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}


@dataclass(frozen=True)
class RuleRejection:
    """A rule that was not loaded: where it is and why."""

    file: str
    rule: str
    reason: str


@dataclass(frozen=True)
class RuleMeta:
    """What an incident needs to know about a rule."""

    rule_id: str
    name: str
    title: str
    severity: str
    attack_tags: tuple[str, ...]
    recommended_actions: tuple[str, ...]
    description: str = ""
    incident: bool | None = None
    """Custom attribute ``incident``: force (true) or suppress (false) standalone incidents."""


@dataclass(frozen=True)
class DetectionRule:
    """A compiled Sigma detection rule."""

    meta: RuleMeta
    event_type: str
    """"detection" / "mitigation" / "" (any), from logsource.category."""
    product_kind: str
    """"threat_discovery_appliance" / "threat_mitigator" / "" (any), from logsource.product."""
    compiled: CompiledDetection


@dataclass(frozen=True)
class Condition:
    """A correlation condition: every (operator, threshold) must hold; ``field`` for value_*."""

    ops: tuple[tuple[str, float], ...]
    field: str | None = None
    percentile: float | None = None

    def holds(self, value: float) -> bool:
        for compare, bound in self._checks:  # noqa: SIM110 - per hit: no generator
            if not compare(value, bound):
                return False
        return True

    @functools.cached_property
    def _checks(self) -> tuple[tuple[Callable[[float, float], bool], float], ...]:
        """The comparisons, looked up once (``holds`` runs for every hit)."""
        return tuple((_COMPARE[op], bound) for op, bound in self.ops)


_COMPARE = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}


@dataclass(frozen=True)
class CorrelationRule:
    """A Sigma correlation rule, resolved to the ids of the rules it references."""

    meta: RuleMeta
    type: str
    rules: tuple[str, ...]
    """Referenced rule ids (detection or correlation), in the rule's order."""
    group_by: tuple[str, ...]
    """Backend field names (after field mapping)."""
    timespan_s: float
    condition: Condition
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    """alias -> {referenced rule id -> backend field}."""
    generate: bool = False
    standalone: bool = False
    """Synthesised for a detection rule that raises incidents on its own."""

    _hit_fields: dict[str, HitFields] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @functools.cached_property
    def needs_every_rule(self) -> bool:
        """Holds only when its window has an event of every rule it references
        (temporal_ordered; temporal without a count condition)."""
        return self.type == "temporal_ordered" or (
            self.type == "temporal" and not self.condition.ops
        )

    @functools.cached_property
    def grows_with_distinct_values(self) -> bool:
        """A value_count whose condition, once it holds, holds for more distinct values
        (only gt/gte): a scan may stop early, and too few values rule it out."""
        ops = self.condition.ops
        return (
            self.type == "value_count" and bool(ops) and all(op in ("gt", "gte") for op, _ in ops)
        )

    @functools.cached_property
    def distinct_values_needed(self) -> int:
        """For a value_count that grows with distinct values (only gt/gte): the least count
        of distinct values, at least one, for which its condition holds."""
        need = 1
        for op, bound in self.condition.ops:
            if op == "gt":
                need = max(need, math.floor(bound) + 1)
            elif op == "gte":
                need = max(need, math.ceil(bound))
        return need

    @functools.cached_property
    def distinct_rules(self) -> int:
        """How many different rules it references."""
        return len(set(self.rules))

    def group_field(self, group: str, rule_id: str) -> str:
        """The event field that carries group-by field ``group`` for events of ``rule_id``."""
        return self.aliases.get(group, {}).get(rule_id, group)

    def hit_fields(self, rule_id: str) -> HitFields:
        """Where a hit of ``rule_id``'s events finds its group and value (cached per rule:
        every hit needs them)."""
        found = self._hit_fields.get(rule_id)
        if found is None:
            cond = self.condition.field
            found = HitFields(
                groups=tuple((g, self.group_field(g, rule_id)) for g in self.group_by),
                key_order=tuple(sorted(self.group_by)),
                value=self.group_field(cond, rule_id) if cond is not None else None,
            )
            self._hit_fields[rule_id] = found
        return found


@dataclass(frozen=True)
class HitFields:
    groups: tuple[tuple[str, str], ...]
    """(group-by field, event field that carries it), in ``group-by`` order."""
    key_order: tuple[str, ...]
    """The group-by fields in group-key order (sorted)."""
    value: str | None
    """The event field a value_* condition aggregates."""


class _PatternIndex:
    """One field's required substrings in one Aho-Corasick automaton: substring -> rules."""

    def __init__(self, by_substring: dict[str, list[DetectionRule]]) -> None:
        substrings = sorted(by_substring)
        self._automaton = AhoCorasick(substrings)
        self._rules = [tuple(by_substring[sub]) for sub in substrings]

    def rules_in(self, text: str) -> Iterator[DetectionRule]:
        """The rules one of whose substrings occurs in ``text`` (lowered)."""
        found = self._automaton.find_matches_as_indexes(text, overlapping=True)
        if len(found) == 1:
            yield from self._rules[found[0][0]]
            return
        for index in {i for i, _start, _end in found}:
            yield from self._rules[index]


class _NetworkIndex:
    """One field's required networks: per IP version, the prefix lengths present, each a
    dict from the network's leading bits to its rules; an address probes each length once."""

    def __init__(self, by_network: dict[IPNetwork, list[DetectionRule]]) -> None:
        tables: dict[tuple[int, int], dict[int, list[DetectionRule]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for net, rules in by_network.items():
            shift = net.max_prefixlen - net.prefixlen
            tables[net.version, shift][int(net.network_address) >> shift].extend(rules)
        self._by_version: dict[int, list[tuple[int, dict[int, list[DetectionRule]]]]] = {}
        for (version, shift), table in sorted(tables.items()):
            self._by_version.setdefault(version, []).append((shift, dict(table)))

    def rules_containing(self, ip: IPAddress) -> Iterator[DetectionRule]:
        """The rules one of whose networks contains ``ip``."""
        number = int(ip)
        for shift, table in self._by_version.get(ip.version, ()):
            hits = table.get(number >> shift)
            if hits:
                yield from hits


@dataclass
class _SourceIndex:
    """The rules of one log source, each under the cheapest key it has."""

    literals: dict[str, dict[str, list[DetectionRule]]] = field(default_factory=dict)
    """field -> lowered value -> rules (required literal: a dict lookup)."""
    networks: dict[str, _NetworkIndex] = field(default_factory=dict)
    patterns: dict[str, _PatternIndex] = field(default_factory=dict)
    by_field: dict[str, list[DetectionRule]] = field(default_factory=dict)
    """field -> rules that need it present (each evaluated whenever it is)."""
    unindexed: list[DetectionRule] = field(default_factory=list)


def _source_index(rules: Iterable[DetectionRule]) -> _SourceIndex:
    literals: dict[str, dict[str, list[DetectionRule]]] = defaultdict(lambda: defaultdict(list))
    networks: dict[str, dict[IPNetwork, list[DetectionRule]]] = defaultdict(
        lambda: defaultdict(list)
    )
    patterns: dict[str, dict[str, list[DetectionRule]]] = defaultdict(lambda: defaultdict(list))
    by_field: dict[str, list[DetectionRule]] = defaultdict(list)
    unindexed: list[DetectionRule] = []

    def add(key: IndexKey, rule: DetectionRule) -> None:
        if isinstance(key, RequiredLiteral):
            for value in key.values:
                literals[key.field][value].append(rule)
        elif isinstance(key, RequiredNetwork):
            for net in key.networks:
                networks[key.field][net].append(rule)
        elif isinstance(key, RequiredPattern):
            for sub in key.substrings:
                patterns[key.field][sub].append(rule)
        else:
            by_field[key].append(rule)

    for rule in rules:
        c = rule.compiled
        if c.key is not None:
            add(c.key, rule)
        elif c.alternatives:
            # under each branch's key: an event meeting several is checked once (match())
            for alternative in c.alternatives:
                add(alternative, rule)
        else:
            unindexed.append(rule)
    return _SourceIndex(
        literals={f: dict(v) for f, v in literals.items()},
        networks={f: _NetworkIndex(n) for f, n in networks.items()},
        patterns={f: _PatternIndex(p) for f, p in patterns.items()},
        by_field=dict(by_field),
        unindexed=unindexed,
    )


@dataclass
class RuleSet:
    """Every loaded rule plus the indexes the engine uses."""

    detections: dict[str, DetectionRule] = field(default_factory=dict)
    correlations: dict[str, CorrelationRule] = field(default_factory=dict)
    rejected: list[RuleRejection] = field(default_factory=list)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    """rule id -> ids of the correlations that reference it."""
    _index: dict[tuple[str, str], _SourceIndex] = field(default_factory=dict)

    def build_index(self) -> None:
        """(Re)build the rule index: by log source, then by each rule's cheapest key.

        Keys in order of preference: required literal, required network, required pattern,
        required field, one key per branch of a top-level OR, none (see
        :class:`CompiledDetection`).
        """
        by_source: dict[tuple[str, str], list[DetectionRule]] = defaultdict(list)
        for rule in self.detections.values():
            by_source[rule.event_type, rule.product_kind].append(rule)
        self._index = {src: _source_index(rules) for src, rules in by_source.items()}
        consumers: dict[str, list[str]] = defaultdict(list)
        for corr in self.correlations.values():
            for ref in corr.rules:
                consumers[ref].append(corr.meta.rule_id)
        self.consumers = dict(consumers)

    def candidates(self, event: Event, low: Event) -> Iterator[DetectionRule]:
        """The rules that can match ``event`` (a superset; a rule may come more than once)."""
        etype = str(event.get("event_type", ""))
        kind = str(event.get("product_kind", ""))
        for source in ((etype, kind), (etype, ""), ("", kind), ("", "")):
            idx = self._index.get(source)
            if idx is None:
                continue
            yield from idx.unindexed
            for fname, rules in idx.by_field.items():
                if event.get(fname) not in (None, ""):
                    yield from rules
            for fname, by_value in idx.literals.items():
                v = low.get(fname)
                if v is None:
                    continue
                hits = by_value.get(v if isinstance(v, str) else str(v).lower())
                if hits:
                    yield from hits
            for fname, nets in idx.networks.items():
                raw = event.get(fname)
                ip = parse_ip(str(raw)) if raw else None
                if ip is not None:
                    yield from nets.rules_containing(ip)
            for fname, pats in idx.patterns.items():
                v = low.get(fname)
                if v is not None:
                    yield from pats.rules_in(v if isinstance(v, str) else str(v).lower())

    def match(self, event: Event) -> list[DetectionRule]:
        """The detection rules ``event`` matches (each at most once)."""
        low = lowered(event)
        out: list[DetectionRule] = []
        tried: set[str] = set()
        for rule in self.candidates(event, low):
            rid = rule.meta.rule_id
            if rid in tried:
                continue
            tried.add(rid)
            if rule.compiled.predicate(event, low):
                out.append(rule)
        return out

    def meta(self, rule_id: str) -> RuleMeta:
        if rule_id in self.detections:
            return self.detections[rule_id].meta
        return self.correlations[rule_id].meta


def _meta(rule: SigmaRule | SigmaCorrelationRule, rule_id: str) -> RuleMeta:
    tags = tuple(
        f"{t.namespace}.{t.name}" for t in (rule.tags or []) if t.namespace in ("attack", "car")
    )
    custom = rule.custom_attributes or {}
    actions = custom.get("recommended_actions") or []
    if isinstance(actions, str):
        actions = [actions]
    level = rule.level.name.lower() if rule.level is not None else "medium"
    return RuleMeta(
        rule_id=rule_id,
        name=rule.name or rule_id,
        title=rule.title or rule.name or rule_id,
        severity=LEVEL_SEVERITY.get(level, "medium"),
        attack_tags=tags,
        recommended_actions=tuple(str(a) for a in actions),
        description=(rule.description or "").strip(),
        incident=bool(custom["incident"]) if "incident" in custom else None,
    )


def _rule_id(rule: SigmaRule | SigmaCorrelationRule, file: str, index: int) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return hashlib.sha256(f"{file}#{index}".encode()).hexdigest()[:16]


def _parse_condition(raw: dict[str, Any], ctype: str) -> Condition:
    cond = raw.get("condition")
    if ctype in ("temporal", "temporal_ordered") and cond is None:
        return Condition(ops=())
    if not isinstance(cond, dict):
        raise UnsupportedRule("correlation condition must be a mapping like {gte: 3}")
    ops: list[tuple[str, float]] = []
    fld: str | None = None
    pct: float | None = None
    for key, value in cond.items():
        if key == "field":
            fld = map_field(str(value))
        elif key == "percentile":
            pct = float(value)
        elif key == "range":
            if not isinstance(value, dict):
                raise UnsupportedRule("condition range must be a mapping {gte: a, lte: b}")
            for op, bound in value.items():
                if op not in OPERATORS:
                    raise UnsupportedRule(f"unknown operator {op!r} in condition range")
                ops.append((op, float(bound)))
        elif key in OPERATORS:
            try:
                ops.append((key, float(value)))
            except (TypeError, ValueError) as exc:
                raise UnsupportedRule(f"condition {key}: {value!r} is not a number") from exc
        else:
            raise UnsupportedRule(f"unknown condition key {key!r}")
    if not ops:
        raise UnsupportedRule("correlation condition has no operator")
    if ctype.startswith("value_") and fld is None:
        raise UnsupportedRule(f"{ctype} correlation needs condition.field")
    if ctype == "value_percentile" and pct is None:
        raise UnsupportedRule("value_percentile correlation needs condition.percentile")
    return Condition(tuple(ops), fld, pct)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_timespan(value: Any) -> float:
    text = str(value).strip()
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise UnsupportedRule(f"timespan {value!r} is not like 30s, 5m, 1h, 1d")
    seconds = int(text[:-1]) * _UNITS[text[-1]]
    if seconds <= 0:
        raise UnsupportedRule("timespan must be positive")
    return float(seconds)


@dataclass
class _PendingCorrelation:
    file: str
    rule_id: str
    raw: dict[str, Any]
    meta: RuleMeta


def load_rules(
    sources: Iterable[tuple[str, str]], *, standalone_window_s: float = 3600.0
) -> RuleSet:
    """Load rules from ``(file name, YAML text)`` pairs; bad rules land in ``rejected``."""
    rs = RuleSet()
    pipeline = field_mapping_pipeline()
    pending: list[_PendingCorrelation] = []
    names: dict[str, str] = {}
    for file, text in sources:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            rs.rejected.append(RuleRejection(file, "", f"invalid YAML: {exc}"))
            continue
        for index, doc in enumerate(docs):
            label = (
                str(doc.get("name") or doc.get("title") or f"#{index}")
                if isinstance(doc, dict)
                else f"#{index}"
            )
            if not isinstance(doc, dict):
                rs.rejected.append(RuleRejection(file, label, "a rule must be a YAML mapping"))
                continue
            try:
                parsed: SigmaRule | SigmaCorrelationRule
                if "correlation" in doc:
                    parsed = SigmaCorrelationRule.from_dict(_for_pysigma(doc), collect_errors=True)
                else:
                    parsed = SigmaRule.from_dict(doc, collect_errors=True)
            except Exception as exc:  # noqa: BLE001 - any parse error rejects this rule only
                rs.rejected.append(RuleRejection(file, label, f"{type(exc).__name__}: {exc}"))
                continue
            for rule in (parsed,):
                if rule.errors:
                    reason = "; ".join(str(e) for e in rule.errors)
                    rs.rejected.append(RuleRejection(file, label, reason))
                    continue
                rid = _rule_id(rule, file, index)
                if rid in rs.detections or any(p.rule_id == rid for p in pending):
                    rs.rejected.append(RuleRejection(file, label, f"duplicate rule id {rid}"))
                    continue
                meta = _meta(rule, rid)
                try:
                    if isinstance(rule, SigmaCorrelationRule):
                        raw = doc.get("correlation") or {}
                        pending.append(_PendingCorrelation(file, rid, raw, meta))
                    else:
                        rs.detections[rid] = _detection(rule, meta, pipeline)
                except UnsupportedRule as exc:
                    rs.rejected.append(RuleRejection(file, label, str(exc)))
                    continue
                names[rid] = rid
                if rule.name:
                    names[str(rule.name)] = rid
    _resolve_correlations(rs, pending, names)
    referenced = {ref for c in rs.correlations.values() for ref in c.rules}
    generating = {ref for c in rs.correlations.values() if c.generate for ref in c.rules}
    for rid, det in rs.detections.items():
        if _raises_incidents(det, referenced=rid in referenced, generating=rid in generating):
            rs.correlations[f"single:{rid}"] = CorrelationRule(
                meta=replace(det.meta, rule_id=f"single:{rid}"),
                type="event_count",
                rules=(rid,),
                group_by=("endpoint_host",),
                timespan_s=standalone_window_s,
                condition=Condition((("gte", 1.0),)),
                standalone=True,
            )
    rs.build_index()
    return rs


def _for_pysigma(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with a spec 2.1 range condition reduced to one operator pySigma accepts.

    The full condition is parsed by :func:`_parse_condition` from the original YAML.
    """
    corr = doc.get("correlation")
    if not isinstance(corr, dict):
        return doc
    cond = corr.get("condition")
    if not isinstance(cond, dict):
        return doc
    ops = [k for k in cond if k in OPERATORS]
    if "range" not in cond and len(ops) <= 1:
        return doc
    reduced = {k: v for k, v in cond.items() if k in ("field", "percentile")}
    reduced["gte"] = 0
    return {**doc, "correlation": {**corr, "condition": reduced}}


def _raises_incidents(det: DetectionRule, *, referenced: bool, generating: bool) -> bool:
    """Whether a detection rule opens incidents by itself (Sigma ``generate`` semantics).

    Unreferenced rules and rules referenced by a correlation with ``generate: true`` do,
    unless informational; the custom attribute ``incident`` overrides either way.
    """
    if det.meta.incident is not None:
        return det.meta.incident
    if referenced and not generating:
        return False
    return det.meta.severity != "informational"


def _detection(rule: SigmaRule, meta: RuleMeta, pipeline: Any) -> DetectionRule:
    ls = rule.logsource
    product = (ls.product or "").lower()
    category = (ls.category or "").lower()
    if product and product not in PRODUCT_ALIASES:
        raise UnsupportedRule(
            f"logsource product {product!r} is not one of {sorted(PRODUCT_ALIASES)}"
        )
    if category and category not in CATEGORY_ALIASES:
        raise UnsupportedRule(
            f"logsource category {category!r} is not one of {sorted(CATEGORY_ALIASES)}"
        )
    try:
        pipeline.apply(rule)
    except Exception as exc:  # noqa: BLE001 - pySigma raises several error types
        raise UnsupportedRule(f"field mapping failed: {exc}") from exc
    return DetectionRule(
        meta=meta,
        event_type=CATEGORY_ALIASES.get(category, ""),
        product_kind=PRODUCT_ALIASES.get(product, ""),
        compiled=compile_rule(rule),
    )


def _resolve_correlations(
    rs: RuleSet, pending: list[_PendingCorrelation], names: dict[str, str]
) -> None:
    remaining = list(pending)
    while remaining:
        progressed = False
        still: list[_PendingCorrelation] = []
        for p in remaining:
            refs = p.raw.get("rules") or []
            if isinstance(refs, str):
                refs = [refs]
            resolved = [names.get(str(r)) for r in refs]
            unknown = [str(r) for r, res in zip(refs, resolved, strict=True) if res is None]
            if unknown:
                rs.rejected.append(
                    RuleRejection(p.file, p.meta.name, f"unknown rule reference(s): {unknown}")
                )
                progressed = True
                continue
            ids = [r for r in resolved if r is not None]
            if any(r not in rs.detections and r not in rs.correlations for r in ids):
                still.append(p)
                continue
            try:
                rs.correlations[p.rule_id] = _correlation(p, tuple(ids), names)
            except UnsupportedRule as exc:
                rs.rejected.append(RuleRejection(p.file, p.meta.name, str(exc)))
            progressed = True
        if not progressed:
            for p in still:
                rs.rejected.append(
                    RuleRejection(p.file, p.meta.name, "reference cycle or rejected reference")
                )
            return
        remaining = still


def _correlation(
    p: _PendingCorrelation, ids: tuple[str, ...], names: dict[str, str]
) -> CorrelationRule:
    raw = p.raw
    ctype = str(raw.get("type", ""))
    if ctype not in CORRELATION_TYPES:
        raise UnsupportedRule(f"correlation type {ctype!r} is not one of {CORRELATION_TYPES}")
    if not ids:
        raise UnsupportedRule("correlation references no rules")
    group_by = raw.get("group-by") or []
    if isinstance(group_by, str):
        group_by = [group_by]
    aliases: dict[str, dict[str, str]] = {}
    for alias, mapping in (raw.get("aliases") or {}).items():
        if not isinstance(mapping, dict):
            raise UnsupportedRule(f"alias {alias!r} must map rule names to fields")
        resolved: dict[str, str] = {}
        for ref, fname in mapping.items():
            rid = names.get(str(ref))
            if rid is None:
                raise UnsupportedRule(f"alias {alias!r} names unknown rule {ref!r}")
            resolved[rid] = map_field(str(fname))
        aliases[str(alias)] = resolved
    return CorrelationRule(
        meta=p.meta,
        type=ctype,
        rules=ids,
        group_by=tuple(g if g in aliases else map_field(str(g)) for g in group_by),
        timespan_s=_parse_timespan(raw.get("timespan") or raw.get("timeframe")),
        condition=_parse_condition(raw, ctype),
        aliases=aliases,
        generate=bool(raw.get("generate", False)),
    )


def read_rule_directory(directory: str | Path) -> tuple[list[tuple[str, str]], list[RuleRejection]]:
    """The ``(file name, text)`` of every ``*.yml``/``*.yaml`` under ``directory`` (sorted,
    recursive), and the files that could not be read."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    sources: list[tuple[str, str]] = []
    rejected: list[RuleRejection] = []
    for path in files:
        try:
            sources.append((str(path.relative_to(root)), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            rejected.append(RuleRejection(str(path.relative_to(root)), "", str(exc)))
    return sources, rejected


def load_rule_directory(directory: str | Path, **kw: Any) -> RuleSet:
    """Load every ``*.yml``/``*.yaml`` under ``directory`` (sorted, recursive)."""
    sources, unreadable = read_rule_directory(directory)
    rs = load_rules(sources, **kw)
    rs.rejected[:0] = unreadable
    return rs


@dataclass
class Reload:
    """What a reload loaded: the rule set, the file versions that loaded cleanly (the next
    reload's fallbacks), and the files whose new version was refused for their last clean
    one."""

    rules: RuleSet
    clean: dict[str, str]
    kept: dict[str, list[RuleRejection]]
    """file -> why its new version was refused (its last clean version runs instead)."""


def reload_rules(
    sources: list[tuple[str, str]],
    unreadable: list[RuleRejection],
    clean: dict[str, str],
    **kw: Any,
) -> Reload:
    """Load ``sources`` again, keeping the last clean version of a file whose new version
    has a rejected rule (a typo in an edited rule must not switch its detections off).

    ``clean`` maps files to the last version of them that loaded without a rejection. A
    file that has none (new, or never clean) loads as it is, its good rules running and its
    bad ones rejected; a removed file's rules are gone; an unreadable file with a clean
    version keeps it."""
    readable = dict(sources)
    first = load_rules(sources, **kw)
    refused: dict[str, list[RuleRejection]] = {}
    for r in [*unreadable, *first.rejected]:
        if r.file in clean and readable.get(r.file) != clean[r.file]:
            refused.setdefault(r.file, []).append(r)
    running = {**readable, **{f: clean[f] for f in refused}}
    rs = load_rules(sorted(running.items()), **kw) if refused else first
    rs.rejected[:0] = [r for r in unreadable if r.file not in refused]
    bad = {r.file for r in rs.rejected}
    return Reload(rs, {f: t for f, t in running.items() if f not in bad}, refused)

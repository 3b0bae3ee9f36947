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

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
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
    UnsupportedRule,
    compile_rule,
    lowered,
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
        for op, bound in self.ops:
            ok = {
                "gt": value > bound,
                "gte": value >= bound,
                "lt": value < bound,
                "lte": value <= bound,
                "eq": value == bound,
                "neq": value != bound,
            }[op]
            if not ok:
                return False
        return True


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

    def group_field(self, group: str, rule_id: str) -> str:
        """The event field that carries group-by field ``group`` for events of ``rule_id``."""
        return self.aliases.get(group, {}).get(rule_id, group)


@dataclass
class RuleSet:
    """Every loaded rule plus the indexes the engine uses."""

    detections: dict[str, DetectionRule] = field(default_factory=dict)
    correlations: dict[str, CorrelationRule] = field(default_factory=dict)
    rejected: list[RuleRejection] = field(default_factory=list)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    """rule id -> ids of the correlations that reference it."""
    _unindexed: dict[tuple[str, str], list[DetectionRule]] = field(default_factory=dict)
    _by_field: dict[tuple[str, str], dict[str, list[DetectionRule]]] = field(default_factory=dict)
    _indexed: dict[tuple[str, str], dict[str, dict[str, list[DetectionRule]]]] = field(
        default_factory=dict
    )

    def build_index(self) -> None:
        """(Re)build the logsource and literal-value indexes."""
        unindexed: dict[tuple[str, str], list[DetectionRule]] = defaultdict(list)
        indexed: dict[tuple[str, str], dict[str, dict[str, list[DetectionRule]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        by_field: dict[tuple[str, str], dict[str, list[DetectionRule]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for rule in self.detections.values():
            source = (rule.event_type, rule.product_kind)
            lit = rule.compiled.literal
            if lit is None and rule.compiled.field is not None:
                by_field[source][rule.compiled.field].append(rule)
            elif lit is None:
                unindexed[source].append(rule)
            else:
                for value in lit.values:
                    indexed[source][lit.field][value].append(rule)
        self._unindexed = dict(unindexed)
        self._by_field = {src: dict(d) for src, d in by_field.items()}
        self._indexed = {s: {f: dict(v) for f, v in d.items()} for s, d in indexed.items()}
        consumers: dict[str, list[str]] = defaultdict(list)
        for corr in self.correlations.values():
            for ref in corr.rules:
                consumers[ref].append(corr.meta.rule_id)
        self.consumers = dict(consumers)

    def candidates(self, event: Event, low: Event) -> Iterator[DetectionRule]:
        """The rules that can match ``event``: by log source, then by literal field values."""
        etype = str(event.get("event_type", ""))
        kind = str(event.get("product_kind", ""))
        for source in ((etype, kind), (etype, ""), ("", kind), ("", "")):
            yield from self._unindexed.get(source, ())
            needing = self._by_field.get(source)
            if needing:
                for fname, rules in needing.items():
                    if event.get(fname) not in (None, ""):
                        yield from rules
            by_field = self._indexed.get(source)
            if not by_field:
                continue
            for fname, by_value in by_field.items():
                v = low.get(fname)
                if v is None:
                    continue
                hits = by_value.get(v if isinstance(v, str) else str(v).lower())
                if hits:
                    yield from hits

    def match(self, event: Event) -> list[DetectionRule]:
        """The detection rules ``event`` matches (each at most once)."""
        low = lowered(event)
        out: list[DetectionRule] = []
        seen: set[str] = set()
        for rule in self.candidates(event, low):
            rid = rule.meta.rule_id
            if rid not in seen and rule.compiled.predicate(event, low):
                seen.add(rid)
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


def load_rule_directory(directory: str | Path, **kw: Any) -> RuleSet:
    """Load every ``*.yml``/``*.yaml`` under ``directory`` (sorted, recursive)."""
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    sources: list[tuple[str, str]] = []
    rejected: list[RuleRejection] = []
    for path in files:
        try:
            sources.append((str(path.relative_to(root)), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            rejected.append(RuleRejection(str(path.relative_to(root)), "", str(exc)))
    rs = load_rules(sources, **kw)
    rs.rejected[:0] = rejected
    return rs

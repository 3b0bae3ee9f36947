"""Compile a parsed Sigma detection rule into a fast Python predicate over a flat event.

pySigma parses the rule and its condition into a tree (AND/OR/NOT over field-equals-value
expressions); this module walks that tree once and returns closures, so matching an event
costs a few dict lookups and string operations. String comparison is case-insensitive as
the Sigma specification says; regular expressions are case-sensitive unless flagged ``i``.

It also extracts, per rule, the necessary conditions the rule index keys on, so that an
event is checked only against rules that can match it: a *required literal* (a field whose
value must equal one of a few plain strings), a *required network* (a field whose address
must lie in one of a few ``|cidr`` networks), a *required pattern* (a field whose value must
contain one of a few substrings) and a *required field* (a field that must be present).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from tmsp_correlator.domain.fields import Event

Predicate = Callable[[Event, Event], bool]
"""``predicate(event, lowered)``: ``lowered`` has every str value lower-cased."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsupportedRule(ValueError):
    """The rule uses a construct this engine cannot evaluate (the reason says which)."""


@dataclass(frozen=True)
class RequiredLiteral:
    """The rule matches only events whose ``field`` (lowered) is one of ``values``."""

    field: str
    values: frozenset[str]


@dataclass(frozen=True)
class RequiredPattern:
    """The rule matches only events whose ``field`` (lowered) contains one of ``substrings``.

    From ``contains``/``startswith``/``endswith`` and wildcard values (the longest literal
    fragment of each) and plain equalities; ``substrings`` are lowered and never empty.
    """

    field: str
    substrings: frozenset[str]


@dataclass(frozen=True)
class RequiredNetwork:
    """The rule matches only events whose ``field`` is an IP address in one of ``networks``."""

    field: str
    networks: frozenset[IPNetwork]


def _always_false(_e: Event, _l: Event) -> bool:
    return False


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _string_predicate(field: str, s: SigmaString, cased: bool) -> Predicate:
    parts = s.s
    if not s.contains_special():
        text = "".join(p for p in parts if isinstance(p, str))
        if cased:

            def eq_cased(e: Event, _l: Event) -> bool:
                return _as_text(e.get(field)) == text

            return eq_cased
        low = text.lower()

        def eq(_e: Event, lo: Event) -> bool:
            v = lo.get(field)
            if v is None:
                return False
            if isinstance(v, str):
                return v == low
            return _as_text(v) == low

        return eq
    plain = [p for p in parts if isinstance(p, str)]
    multi = [p for p in parts if p is SpecialChars.WILDCARD_MULTI]
    single = [p for p in parts if p is SpecialChars.WILDCARD_SINGLE]
    if not single and not cased and len(plain) == 1:
        needle = plain[0].lower()
        first, last = parts[0], parts[-1]
        if len(multi) == 2 and first is SpecialChars.WILDCARD_MULTI and last is first:
            return _text_test(field, lambda v: needle in v)
        if len(multi) == 1 and last is SpecialChars.WILDCARD_MULTI:
            return _text_test(field, lambda v: v.startswith(needle))
        if len(multi) == 1 and first is SpecialChars.WILDCARD_MULTI:
            return _text_test(field, lambda v: v.endswith(needle))
    pattern = "".join(
        ".*"
        if p is SpecialChars.WILDCARD_MULTI
        else "."
        if p is SpecialChars.WILDCARD_SINGLE
        else re.escape(p if cased else p.lower())
        if isinstance(p, str)
        else ""
        for p in parts
    )
    # lowered pattern against the lowered value, not re.IGNORECASE: the same equality as
    # the fast paths above and as the rule index's substrings (IGNORECASE also folds ı, ſ)
    rx = re.compile(pattern, re.DOTALL)
    if cased:

        def rx_cased(e: Event, _l: Event) -> bool:
            v = _as_text(e.get(field))
            return v is not None and rx.fullmatch(v) is not None

        return rx_cased
    return _text_test(field, lambda v: rx.fullmatch(v) is not None)


def _text_test(field: str, test: Callable[[str], bool]) -> Predicate:
    def pred(_e: Event, lo: Event) -> bool:
        v = lo.get(field)
        if v is None:
            return False
        return test(v if isinstance(v, str) else str(v).lower())

    return pred


@functools.lru_cache(maxsize=65536)
def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` spells, or None; what ``|cidr`` tests and the rule index use."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_COMPARE: dict[CompareOperators, Callable[[float, float], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
}


def _value_predicate(field: str, value: Any) -> Predicate:
    if isinstance(value, SigmaCasedString):
        return _string_predicate(field, value, cased=True)
    if isinstance(value, SigmaString):
        return _string_predicate(field, value, cased=False)
    if isinstance(value, SigmaNumber):
        target = float(value.number)

        def num_eq(e: Event, _l: Event) -> bool:
            return _number(e.get(field)) == target

        return num_eq
    if isinstance(value, SigmaBool):
        want = value.boolean

        def bool_eq(e: Event, _l: Event) -> bool:
            v = e.get(field)
            if isinstance(v, str):
                return v.lower() == ("true" if want else "false")
            return v is not None and bool(v) == want

        return bool_eq
    if isinstance(value, SigmaNull):

        def is_null(e: Event, _l: Event) -> bool:
            return e.get(field) in (None, "")

        return is_null
    if isinstance(value, SigmaExists):
        exists = value.exists

        def has(e: Event, _l: Event) -> bool:
            return (e.get(field) not in (None, "")) == exists

        return has
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for f in value.flags:
            flags |= {
                SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
                SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
                SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
            }[f]
        try:
            rx = re.compile(value.regexp.to_plain(), flags)
        except re.error as exc:
            raise UnsupportedRule(f"field {field}: bad regular expression: {exc}") from exc

        def rx_search(e: Event, _l: Event) -> bool:
            v = _as_text(e.get(field))
            return v is not None and rx.search(v) is not None

        return rx_search
    if isinstance(value, SigmaCIDRExpression):
        net = value.network

        def in_net(e: Event, _l: Event) -> bool:
            v = e.get(field)
            if not v:
                return False
            ip = parse_ip(str(v))
            return ip is not None and ip in net

        return in_net
    if isinstance(value, SigmaCompareExpression):
        op = _COMPARE[value.op]
        bound = float(value.number.number)

        def compare(e: Event, _l: Event) -> bool:
            n = _number(e.get(field))
            return n is not None and op(n, bound)

        return compare
    if isinstance(value, SigmaFieldReference):
        other = value.field

        def same(_e: Event, lo: Event) -> bool:
            v = lo.get(field)
            return v is not None and v == lo.get(other)

        return same
    if isinstance(value, SigmaExpansion):
        preds = [_value_predicate(field, v) for v in value.values]
        return lambda e, lo: any(p(e, lo) for p in preds)
    raise UnsupportedRule(f"field {field}: unsupported value type {type(value).__name__}")


def _keyword_predicate(value: Any) -> Predicate:
    if isinstance(value, SigmaString):
        if value.contains_special():
            inner = _string_predicate("_", value, cased=False)
        else:
            inner = _string_predicate("_", SigmaString("*" + value.to_plain() + "*"), False)

        def any_field(_e: Event, lo: Event) -> bool:
            return any(isinstance(v, str) and inner({}, {"_": v}) for v in lo.values())

        return any_field
    raise UnsupportedRule(f"keyword of type {type(value).__name__} is not supported")


def _plain_literal(value: Any) -> str | None:
    """The lowered text a case-insensitive plain string equals, or None (numbers compare
    as numbers: "0443" and 443.0 equal 443, which no one string does)."""
    if isinstance(value, SigmaCasedString):
        return None
    if isinstance(value, SigmaString) and not value.contains_special():
        return value.to_plain().lower()
    return None


def compile_node(node: Any) -> Predicate:
    """Compile one node of a parsed Sigma condition."""
    if isinstance(node, ConditionAND):
        preds = [compile_node(a) for a in sorted(node.args, key=_cost)]
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            p0, p1 = preds
            return lambda e, lo: p0(e, lo) and p1(e, lo)
        if len(preds) == 3:
            q0, q1, q2 = preds
            return lambda e, lo: q0(e, lo) and q1(e, lo) and q2(e, lo)
        return lambda e, lo: all(p(e, lo) for p in preds)
    if isinstance(node, ConditionOR):
        literal = _same_field_literals(node)
        if literal is not None:
            field, values = literal.field, literal.values

            def member(_e: Event, lo: Event) -> bool:
                v = lo.get(field)
                if v is None:
                    return False
                return (v if isinstance(v, str) else str(v).lower()) in values

            return member
        numbers = _same_field(node, _number_value)
        if numbers is not None:
            num_field, targets = numbers

            def num_member(e: Event, _l: Event) -> bool:
                return _number(e.get(num_field)) in targets

            return num_member
        networks: tuple[str, frozenset[IPNetwork]] | None = _same_field(node, _network_value)
        if networks is not None:
            net_field = networks[0]
            nets: tuple[IPNetwork, ...] = tuple(networks[1])

            def in_any_net(e: Event, _l: Event) -> bool:
                v = e.get(net_field)
                if not v:
                    return False
                ip = parse_ip(str(v))
                if ip is None:
                    return False
                for net in nets:  # noqa: SIM110 - per event: no generator
                    if ip in net:
                        return True
                return False

            return in_any_net
        preds = [compile_node(a) for a in node.args]
        if len(preds) == 1:
            return preds[0]
        return lambda e, lo: any(p(e, lo) for p in preds)
    if isinstance(node, ConditionNOT):
        inner = compile_node(node.args[0])
        return lambda e, lo: not inner(e, lo)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _value_predicate(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return _keyword_predicate(node.value)
    raise UnsupportedRule(f"unsupported condition element {type(node).__name__}")


def _same_field(
    node: ConditionOR, value_of: Callable[[Any], _T | None]
) -> tuple[str, frozenset[_T]] | None:
    """An OR of tests of one field (a rule's list of values) each of whose values
    ``value_of`` reads: the field and what it read; None if a test is of another kind or
    field (one predicate then looks the event's value up once instead of one per test)."""
    fields: set[str] = set()
    values: set[_T] = set()
    for arg in node.args:
        if not isinstance(arg, ConditionFieldEqualsValueExpression):
            return None
        v = value_of(arg.value)
        if v is None:
            return None
        fields.add(str(arg.field))
        values.add(v)
    return (fields.pop(), frozenset(values)) if len(fields) == 1 else None


def _same_field_literals(node: ConditionOR) -> RequiredLiteral | None:
    """An OR of plain (case-insensitive) strings on one field."""
    found = _same_field(node, _plain_literal)
    return RequiredLiteral(*found) if found else None


def _number_value(value: Any) -> float | None:
    return float(value.number) if isinstance(value, SigmaNumber) else None


def _network_value(value: Any) -> IPNetwork | None:
    return value.network if isinstance(value, SigmaCIDRExpression) else None


def _cost(node: Any) -> int:
    """Rough evaluation cost, so that cheap tests run first in a conjunction."""
    if isinstance(node, ConditionFieldEqualsValueExpression):
        v = node.value
        if isinstance(v, SigmaString) and not v.contains_special():
            return 1
        if isinstance(v, SigmaNumber | SigmaNull | SigmaExists | SigmaBool):
            return 1
        if isinstance(v, SigmaString | SigmaCompareExpression):
            return 2
        if isinstance(v, SigmaCIDRExpression):
            return 3
        return 4
    if isinstance(node, ConditionOR):
        if _same_field_literals(node) is not None or _same_field(node, _number_value):
            return 1
        if _same_field(node, _network_value):
            return 3
    return 5


def required_field(node: Any) -> str | None:
    """A field every matching event must have (a positive test on it in a conjunction)."""
    if isinstance(node, ConditionFieldEqualsValueExpression):
        v = node.value
        if isinstance(v, SigmaNull) or (isinstance(v, SigmaExists) and not v.exists):
            return None
        return str(node.field)
    if isinstance(node, ConditionAND):
        for arg in sorted(node.args, key=_cost):
            f = required_field(arg)
            if f is not None:
                return f
        return None
    if isinstance(node, ConditionOR):
        fields = {required_field(a) for a in node.args}
        if len(fields) == 1:
            return fields.pop()
    return None


_T = TypeVar("_T")


def _requirement(
    node: Any,
    leaf: Callable[[Any], frozenset[_T] | None],
    selectivity: Callable[[frozenset[_T]], tuple[float, float]],
) -> tuple[str, frozenset[_T]] | None:
    """A field and a set one member of which every event matching ``node`` meets, or None.

    ``leaf(value)`` gives the set of one field's value (an expansion: the union of its
    values'); an OR of such sets on one field unites them; an AND takes its most selective
    child (smallest ``selectivity``); a NOT, a keyword or anything else gives none.
    """
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = node.value
        if isinstance(value, SigmaExpansion):
            sets = [leaf(v) for v in value.values]
            known_sets = [m for m in sets if m is not None]
            found = frozenset().union(*known_sets) if len(known_sets) == len(sets) else None
        else:
            found = leaf(value)
        return (str(node.field), found) if found else None
    if isinstance(node, ConditionOR):
        parts = [_requirement(a, leaf, selectivity) for a in node.args]
        known = [p for p in parts if p is not None]
        if not known or len(known) < len(parts) or len({f for f, _ in known}) != 1:
            return None
        return known[0][0], frozenset().union(*(members for _, members in known))
    if isinstance(node, ConditionAND):
        found_in = (_requirement(a, leaf, selectivity) for a in node.args)
        return min(
            (r for r in found_in if r is not None),
            key=lambda r: selectivity(r[1]),
            default=None,
        )
    return None


def _literal_values(value: Any) -> frozenset[str] | None:
    lit = _plain_literal(value)
    return frozenset({lit}) if lit is not None else None


def _substrings(value: Any) -> frozenset[str] | None:
    """The longest literal fragment of a case-insensitive string value, lowered, if any."""
    if not isinstance(value, SigmaString) or isinstance(value, SigmaCasedString):
        return None
    fragments = [""]
    for part in value.s:
        if isinstance(part, str):
            fragments[-1] += part
        else:
            fragments.append("")
    longest = max(fragments, key=len).lower()
    return frozenset({longest}) if longest else None


def _networks(value: Any) -> frozenset[IPNetwork] | None:
    return frozenset({value.network}) if isinstance(value, SigmaCIDRExpression) else None


def required_literal(node: Any) -> RequiredLiteral | None:
    """A field/values pair every matching event must satisfy, or None if there is none."""
    found = _requirement(node, _literal_values, lambda values: (len(values), 0.0))
    return RequiredLiteral(*found) if found else None


def required_pattern(node: Any) -> RequiredPattern | None:
    """A field/substrings pair every matching event satisfies, or None if there is none.

    Fewer substrings are more selective, then a longer shortest one.
    """
    found = _requirement(node, _substrings, lambda subs: (len(subs), -min(map(len, subs))))
    return RequiredPattern(*found) if found else None


def required_network(node: Any) -> RequiredNetwork | None:
    """A field/networks pair every matching event satisfies, or None if there is none.

    Fewer networks are more selective, then a longer (relative) shortest prefix.
    """
    found = _requirement(
        node, _networks, lambda nets: (len(nets), -min(n.prefixlen / n.max_prefixlen for n in nets))
    )
    return RequiredNetwork(*found) if found else None


IndexKey = RequiredLiteral | RequiredNetwork | RequiredPattern | str
"""One necessary condition an index can look up (a ``str``: a field that must be present)."""


def _cheapest(
    literal: RequiredLiteral | None,
    network: RequiredNetwork | None,
    pattern: RequiredPattern | None,
    field: str | None,
) -> IndexKey | None:
    """The index's order of preference: required literal, network, pattern, field."""
    return literal or network or pattern or field


def index_key(node: Any) -> IndexKey | None:
    """The cheapest necessary condition of ``node`` an index can key on, or None."""
    return _cheapest(
        required_literal(node), required_network(node), required_pattern(node), required_field(node)
    )


def alternative_keys(node: Any) -> tuple[IndexKey, ...] | None:
    """For an OR whose branches each have an index key (``1 of sel_*`` over different
    fields): those keys, one of which every matching event meets; otherwise None."""
    if not isinstance(node, ConditionOR):
        return None
    keys = []
    for arg in node.args:
        key = index_key(arg)
        if key is None:
            return None
        keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class CompiledDetection:
    """A detection rule ready to match: its predicate and its index keys (None: no such key).

    Each key is a necessary condition of the predicate, never a sufficient one.
    """

    predicate: Predicate
    literal: RequiredLiteral | None
    field: str | None = None
    """A field the event must carry for the rule to match."""
    network: RequiredNetwork | None = None
    pattern: RequiredPattern | None = None
    alternatives: tuple[IndexKey, ...] | None = None
    """With no single key: one per branch of a top-level OR (each event meets one)."""

    @property
    def key(self) -> IndexKey | None:
        """The one key the index files the rule under (None: see ``alternatives``)."""
        return _cheapest(self.literal, self.network, self.pattern, self.field)


def compile_rule(rule: SigmaRule) -> CompiledDetection:
    """Compile a (pipeline-processed) Sigma rule; raises :class:`UnsupportedRule`."""
    conditions = rule.detection.parsed_condition
    trees = []
    for cond in conditions:
        try:
            trees.append(cond.parse())
        except Exception as exc:  # noqa: BLE001 - pySigma raises several error types
            raise UnsupportedRule(f"condition {cond.condition!r}: {exc}") from exc
    if not trees:
        raise UnsupportedRule("rule has no condition")
    preds = [compile_node(t) for t in trees]
    if len(preds) == 1:
        tree = trees[0]
        return CompiledDetection(
            preds[0],
            required_literal(tree),
            required_field(tree),
            network=required_network(tree),
            pattern=required_pattern(tree),
            alternatives=alternative_keys(tree),
        )
    return CompiledDetection(lambda e, lo: any(p(e, lo) for p in preds), None)


def lowered(event: Event) -> Event:
    """The lower-cased view of an event that predicates compare plain strings against."""
    return {k: (v.lower() if isinstance(v, str) else v) for k, v in event.items()}


__all__ = [
    "CompiledDetection",
    "IPAddress",
    "IndexKey",
    "IPNetwork",
    "Predicate",
    "RequiredLiteral",
    "RequiredNetwork",
    "RequiredPattern",
    "UnsupportedRule",
    "_always_false",
    "alternative_keys",
    "compile_rule",
    "index_key",
    "lowered",
    "parse_ip",
    "required_literal",
    "required_network",
    "required_pattern",
]

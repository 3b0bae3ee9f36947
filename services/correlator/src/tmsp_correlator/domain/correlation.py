"""Streaming evaluation of Sigma correlation rules over event-time sliding windows.

Two stages, so that several workers count correctly:

1. :func:`hits_for_event` (stateless) matches an event against the detection rules and
   emits one *hit* per (correlation rule, group) it contributes to. Each hit carries its
   *group key* (account + correlation + group-by values); the streaming app partitions
   hits by that key so every event of a group meets in the same worker.
2. :func:`apply_hit` (stateful, per group key) keeps the group's window in a plain,
   JSON-serialisable dict (a faust table value, persisted through its changelog), decides
   whether the correlation condition holds for a sliding window of ``timespan`` that
   contains the new event, and opens or updates the group's incident.

Event time drives windows. A hit older than the group's newest event minus the allowed
lateness is *late* and rejected with a reason (the app dead-letters it); anything newer is
inserted in time order, so out-of-order events count. Hits are deduplicated by event id, so
a replay after a crash changes nothing (and re-emits the incident, whose writes are
idempotent). Correlations that reference other correlations receive *chained hits* whose
event id is the firing incident's id.

Triage decisions (a portal user sets an incident's status) travel the same path as *status
hits* keyed by the incident's group key, so the group's one writer applies them
(:func:`apply_status`). A resolved or false-positive incident is closed: later matches do
not extend it but open a new incident from events after it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import operator
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tmsp_correlator.domain.fields import SEVERITY_RANK, Event
from tmsp_correlator.domain.rules import CorrelationRule, RuleSet

Hit = dict[str, Any]
"""A hit (JSON-serialisable): see :func:`make_hit` for its keys."""
GroupState = dict[str, Any]
"""Per-group state (JSON-serialisable): ``w`` window entries, ``max`` watermark, ``inc``;
plus indexes rebuilt when missing (:data:`DERIVED_STATE`)."""

Entry = tuple[Any, ...]
"""A window entry: ``(ts, rule_id, event_id, value, summary, host, ip, mac)``. A tuple: it is
cheaper to build than a list, and, holding only strings and numbers, the cyclic garbage
collector stops tracking it once it has seen it (a list stays tracked for life, and the
windows of a busy worker hold hundreds of thousands of entries). The engine bench ran
1.12-1.18x faster than with lists. A state read back from the changelog has lists:
:func:`apply_hit` turns them into tuples as it rebuilds the indexes."""
_TS, _RULE, _EID, _VAL, _SUM, _HOST, _IP, _MAC = range(8)

STATUSES = ("new", "investigating", "resolved", "false_positive")
OPEN_STATUSES = ("new", "investigating")
"""An open incident is extended by repeated matches; a closed one (resolved, false
positive) is not."""
STATUS_HIT = "status"
"""The ``x`` (kind) of a status hit; a detection hit has none."""
MAX_PAST_INCIDENTS = 8
"""A group state remembers the ids and last versions of this many earlier incidents."""
SEEN = "seen"
"""When a hit last changed the group's state (wall clock, stamped by the writer as it
writes the state): what :func:`idle_groups` measures."""


@dataclass(frozen=True)
class Limits:
    """Bounds that keep state and incidents small."""

    allowed_lateness_s: float = 3600.0
    max_window_events: int = 1000
    max_standalone_events: int = 50
    """A standalone rule needs no window beyond replay detection: keep it short."""
    max_incident_event_ids: int = 200
    max_incident_endpoints: int = 100
    """An outbreak touches many endpoints: the incident lists the first ones (count is exact)."""
    max_timeline: int = 200


@dataclass
class Outcome:
    """What applying one hit did."""

    late_reason: str | None = None
    duplicate: bool = False
    incident: dict[str, Any] | None = None
    """The incident to upsert and publish (new, updated, or re-emitted on replay)."""
    new_incident: bool = False
    chained: list[Hit] = field(default_factory=list)
    detached: int | None = None
    """A status hit for an incident that is no longer its group's current one: the caller
    changes the stored copy. The value is the last version the group published of it (0
    if the group does not remember it): the stored copy must have caught up to it."""


def _summary(event: Event, rule_title: str) -> str:
    threat = event.get("threat_name") or event.get("signature_id") or ""
    where = event.get("endpoint_host") or event.get("source_ip") or ""
    parts = [rule_title]
    if threat:
        parts.append(str(threat))
    if where:
        parts.append(f"on {where}")
    return ": ".join(parts[:2]) + (f" {parts[2]}" if len(parts) > 2 else "")


_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps`` with these separators builds an encoder per call (a third of a hit's cost)."""


_NEEDS_NO_ESCAPE = re.compile(r"[ !#-\[\]-~]*")
"""Printable ASCII but the quote and the backslash: what JSON writes as it is."""


def group_key(account_id: str, correlation_id: str, values: list[str]) -> str:
    """The partitioning and state key of one correlation group: ``values`` are the group-by
    values in sorted field order, as compact ASCII-escaped JSON (the format keys have had
    since the first release, so window states keep their keys). Values JSON writes as they
    are (host names, addresses: the usual case) are joined without the encoder."""
    if values and _NEEDS_NO_ESCAPE.fullmatch("".join(values)):
        joined = '","'.join(values)
        return f'{account_id}|{correlation_id}|["{joined}"]'
    return f"{account_id}|{correlation_id}|{_KEY_ENCODER.encode(values)}"


def make_hit(
    corr: CorrelationRule,
    rule_id: str,
    *,
    account_id: str,
    event_id: str,
    ts: float,
    fields: dict[str, Any],
    summary: str,
    origin: dict[str, Any] | None = None,
) -> Hit:
    """A hit of ``rule_id``'s event (``fields``) for correlation ``corr``."""
    where = corr.hit_fields(rule_id)
    group = {g: str(fields.get(f) or "") for g, f in where.groups}
    cid = corr.meta.rule_id
    return {
        "c": cid,
        "k": group_key(account_id, cid, [group[g] for g in where.key_order]),
        "a": account_id,
        "g": group,
        "r": rule_id,
        "e": event_id,
        "t": ts,
        "v": fields.get(where.value) if where.value is not None else None,
        "s": summary,
        "ep": [
            str(fields.get("endpoint_host") or ""),
            str(fields.get("endpoint_ip") or ""),
            str(fields.get("endpoint_mac") or ""),
        ],
        "o": origin or {},
    }


def hits_for_event(rules: RuleSet, event: Event, origin: dict[str, Any] | None = None) -> list[Hit]:
    """Stage 1: the hits ``event`` produces (empty if no rule matches)."""
    out: list[Hit] = []
    matched = rules.match(event)
    if not matched:
        return out
    account = str(event.get("account_id", ""))
    event_id = str(event.get("event_id", ""))
    ts = float(event["ts"])
    for det in matched:
        summary = _summary(event, det.meta.title)
        for corr_id in rules.consumers.get(det.meta.rule_id, ()):
            corr = rules.correlations[corr_id]
            out.append(
                make_hit(
                    corr,
                    det.meta.rule_id,
                    account_id=account,
                    event_id=event_id,
                    ts=ts,
                    fields=event,
                    summary=summary,
                    origin=origin,
                )
            )
    return out


def _aggregate_ok(corr: CorrelationRule, window: list[Entry]) -> bool:
    ctype = corr.type
    cond = corr.condition
    if ctype == "event_count":
        return cond.holds(len(window))
    if ctype == "value_count":
        if corr.grows_with_distinct_values:
            # monotonic: stop as soon as enough distinct values were seen (newest first)
            need = corr.distinct_values_needed
            seen: set[Any] = set()
            # (an index loop: mypyc 2.4 fails on reversed() of this list type)
            for i in range(len(window) - 1, -1, -1):
                v = window[i][_VAL]
                if v not in (None, "") and v not in seen:
                    seen.add(v)
                    if len(seen) >= need:
                        return True
            return False
        return cond.holds(len({e[_VAL] for e in window if e[_VAL] not in (None, "")}))
    if ctype == "temporal":
        present = len({e[_RULE] for e in window})
        if not cond.ops:
            return present >= corr.distinct_rules
        return cond.holds(present)
    if ctype == "temporal_ordered":
        want = corr.rules
        i = 0
        for e in window:
            if e[_RULE] == want[i]:
                i += 1
                if i == len(want):
                    return True if not cond.ops else cond.holds(len(want))
        return False
    numbers: list[float] = []
    for e in window:
        try:
            if e[_VAL] not in (None, ""):
                numbers.append(float(e[_VAL]))
        except (TypeError, ValueError):
            continue
    if not numbers:
        return False
    if ctype == "value_sum":
        return cond.holds(sum(numbers))
    if ctype == "value_avg":
        return cond.holds(sum(numbers) / len(numbers))
    if ctype == "value_median":
        return cond.holds(float(statistics.median(numbers)))
    if ctype == "value_percentile":
        pct = cond.percentile if cond.percentile is not None else 50.0
        ordered = sorted(numbers)
        rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * (len(ordered) - 1))))
        return cond.holds(ordered[rank])
    return False


_ts_key = operator.itemgetter(_TS)
"""Sort key of window entries and timeline items (C-level: bisect calls it per step)."""


def _firing_window(corr: CorrelationRule, w: list[Entry], ts: float) -> list[Entry] | None:
    """The earliest sliding window (of ``timespan``) containing ``ts`` whose condition holds.

    Windows are ``[end - timespan, end]`` for every event time ``end`` in
    ``[ts, ts + timespan]``; for an in-order event that is one window. ``event_count`` is
    answered from positions alone (binary search), the other types scan their window.
    """
    span = corr.timespan_s
    if w[-1][_TS] <= ts:
        # the group's newest event (the usual case): the one window ends at it
        lo = bisect.bisect_left(w, ts - span, key=_ts_key)
        if corr.type == "event_count":
            return w[lo:] if corr.condition.holds(len(w) - lo) else None
        window = w[lo:]
        return window if _aggregate_ok(corr, window) else None
    first = bisect.bisect_left(w, ts, key=_ts_key)
    last = bisect.bisect_right(w, ts + span, key=_ts_key)
    previous_end = None
    for i in range(first, last):
        end = w[i][_TS]
        if end == previous_end:
            continue
        previous_end = end
        lo = bisect.bisect_left(w, end - span, key=_ts_key)
        hi = bisect.bisect_right(w, end, lo=i, key=_ts_key)
        if corr.type == "event_count":
            if corr.condition.holds(hi - lo):
                return w[lo:hi]
            continue
        window = w[lo:hi]
        if _aggregate_ok(corr, window):
            return window
    return None


def incident_id(account_id: str, correlation_id: str, key: str, window_start: float) -> str:
    """Deterministic: a replay of the same events yields the same id."""
    raw = f"{account_id}\n{correlation_id}\n{key}\n{window_start:.6f}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _endpoint_list(entries: list[Entry]) -> list[list[str]]:
    seen: dict[tuple[str, str, str], None] = {}
    for e in entries:
        ep = (e[_HOST], e[_IP], e[_MAC])
        if any(ep):
            seen.setdefault(ep, None)
    return [list(ep) for ep in seen]


def _new_incident(
    corr: CorrelationRule, rules: RuleSet, hit: Hit, window: list[Entry], limits: Limits
) -> dict[str, Any]:
    start = window[0][_TS]
    rule_ids = list(corr.rules) if corr.standalone else [corr.meta.rule_id, *corr.rules]
    tags: dict[str, None] = dict.fromkeys(corr.meta.attack_tags)
    actions: dict[str, None] = dict.fromkeys(corr.meta.recommended_actions)
    severity = corr.meta.severity
    for rid in corr.rules:
        m = rules.meta(rid)
        tags.update(dict.fromkeys(m.attack_tags))
        actions.update(dict.fromkeys(m.recommended_actions))
        if corr.standalone and SEVERITY_RANK.get(m.severity, 0) > SEVERITY_RANK.get(severity, 0):
            severity = m.severity
    inc: dict[str, Any] = {
        "id": incident_id(hit["a"], corr.meta.rule_id, hit["k"], start),
        "account_id": hit["a"],
        "rule_ids": rule_ids,
        "title": corr.meta.title,
        "description": corr.meta.description,
        "severity": severity,
        "group": dict(hit["g"]),
        "endpoints": [],
        "first": start,
        "last": start,
        "until": start,
        "count": 0,
        "event_ids": [],
        "timeline": [],
        "tags": list(tags),
        "actions": list(actions),
        "status": "new",
        "version": 0,
        "key": hit["k"],
    }
    for entry in window:
        _add_to_incident(inc, corr, entry, limits)
    return inc


def _add_to_incident(
    inc: dict[str, Any],
    corr: CorrelationRule,
    entry: Entry,
    limits: Limits,
    *,
    known_new: bool = False,
) -> bool:
    """Add one window entry; False if it was already part of the incident (not checked
    again when the caller knows it is not: the check scans the incident's event ids)."""
    eid = entry[_EID]
    ts = entry[_TS]
    if not known_new and _in_incident(inc, eid, ts):
        return False
    inc["count"] += 1
    if len(inc["event_ids"]) < limits.max_incident_event_ids:
        inc["event_ids"].append(eid)
    inc["first"] = min(inc["first"], ts)
    inc["last"] = max(inc["last"], ts)
    inc["until"] = inc["last"] + corr.timespan_s
    ep = [entry[_HOST], entry[_IP], entry[_MAC]]
    endpoints = inc["endpoints"]
    if any(ep) and len(endpoints) < limits.max_incident_endpoints and ep not in endpoints:
        endpoints.append(ep)
    tl = inc["timeline"]
    item = [ts, eid, entry[_RULE], entry[_SUM], *ep]
    bisect.insort_right(tl, item, key=_ts_key)
    if len(tl) > limits.max_timeline:
        # keep the start of the chain and the most recent events
        half = limits.max_timeline // 2
        del tl[half : len(tl) - (limits.max_timeline - half)]
    return True


def _in_incident(inc: dict[str, Any], eid: str, ts: float) -> bool:
    """Whether event ``eid`` (at ``ts``) is already part of ``inc`` (as far as ids are kept).

    Only events inside the incident's first..last span can be part of it, which spares the
    scan of its event ids for the usual case, an event newer than the incident.
    """
    return bool(inc["first"] <= ts <= inc["last"] and eid in inc["event_ids"])


DERIVED_STATE = ("ids", "n")
"""Indexes of a group state that :func:`apply_hit` rebuilds from its window ``w`` when
missing (after a recovery): ``ids`` event id -> time; ``n`` how many window entries carry
each value of the column the correlation counts (see :func:`_counted_column`). Not
persisted."""


def _counted_column(corr: CorrelationRule) -> int | None:
    """The window column whose distinct values bound the condition, or None.

    temporal_ordered (and temporal without a count) holds only with an entry of every
    referenced rule: the rule column. value_count with only gt/gte holds only if the window
    has enough distinct values: the value column. With the number of distinct values in
    the whole group window, no window of it can hold when that number does not.
    """
    if corr.needs_every_rule:
        return _RULE
    if corr.grows_with_distinct_values:
        return _VAL
    return None


def _cannot_hold(corr: CorrelationRule, distinct: int) -> bool:
    """Whether no window holds, given the group window's number of distinct counted values."""
    if corr.grows_with_distinct_values:
        return distinct < corr.distinct_values_needed
    return distinct < corr.distinct_rules


def _value_counts(w: list[Entry], column: int) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for e in w:
        v = e[column]
        if v not in (None, ""):
            counts[v] = counts.get(v, 0) + 1
    return counts


def apply_hit(
    rules: RuleSet, state: GroupState | None, hit: Hit, limits: Limits
) -> tuple[GroupState, Outcome]:
    """Stage 2: apply one hit to its group's state; returns the new state and what happened."""
    corr = rules.correlations.get(hit["c"])
    st: GroupState = state if state is not None else {"w": [], "max": None, "inc": None}
    out = Outcome()
    if corr is None:
        out.late_reason = f"unknown correlation {hit['c']!r} (rule removed)"
        return st, out
    ids: dict[str, float] | None = st.get("ids")
    if ids is None:
        # a state from outside (recovered from the changelog: JSON lists): entries become
        # tuples, and the indexes are rebuilt
        recovered: list[Any] = st["w"]
        st["w"] = [tuple(e) for e in recovered]
        ids = st["ids"] = {e[_EID]: e[_TS] for e in st["w"]}
    w: list[Entry] = st["w"]
    column = _counted_column(corr)
    counts: dict[Any, int] = {}
    if column is not None:
        kept = st.get("n")
        counts = kept if kept is not None else _value_counts(w, column)
        st["n"] = counts
    ts = float(hit["t"])
    eid = hit["e"]
    inc = st.get("inc")
    known = inc is not None and _in_incident(inc, eid, ts)
    if eid in ids or known:
        out.duplicate = True
        if inc is not None and (
            known or (inc["count"] > len(inc["event_ids"]) and inc["first"] <= ts <= inc["last"])
        ):
            # a replay (crash between the state write and the incident write): re-emit it
            out.incident = inc
        return st, out
    watermark = st.get("max")
    if watermark is not None and ts < watermark - limits.allowed_lateness_s:
        out.late_reason = (
            f"late event: {watermark - ts:.0f}s behind the group's newest event, allowed "
            f"lateness {limits.allowed_lateness_s:.0f}s"
        )
        return st, out
    ep = hit.get("ep") or ["", "", ""]
    entry = (ts, hit["r"], eid, hit.get("v"), hit.get("s", ""), ep[0], ep[1], ep[2])
    bisect.insort_right(w, entry, key=_ts_key)
    ids[eid] = ts
    if column is not None and entry[column] not in (None, ""):
        counts[entry[column]] = counts.get(entry[column], 0) + 1
    st["max"] = ts if watermark is None else max(watermark, ts)
    horizon = st["max"] - corr.timespan_s - limits.allowed_lateness_s
    cut = bisect.bisect_left(w, horizon, key=_ts_key)
    cap = limits.max_standalone_events if corr.standalone else limits.max_window_events
    cut = max(cut, len(w) - cap)
    if cut > 0:
        for gone in w[:cut]:
            ids.pop(gone[_EID], None)
            if column is not None:
                value = gone[column]
                left = counts.get(value, 0) - 1
                if left > 0:
                    counts[value] = left
                else:
                    counts.pop(value, None)
        del w[:cut]
    if column is not None and _cannot_hold(corr, len(counts)):
        # too few distinct rules or values in the whole group window for any window of it
        # to hold: spare the scan (a noisy host's window holds up to max_window_events
        # entries while it waits for a sequence's second rule or a scan's 20th target)
        return st, out
    if inc is not None and inc.get("status", "new") not in OPEN_STATUSES:
        # a closed incident is not extended: only events after it can open the next one
        if ts <= inc["last"]:
            return st, out
        window = _firing_window(corr, w[bisect.bisect_right(w, inc["last"], key=_ts_key) :], ts)
        open_inc = False
    else:
        window = _firing_window(corr, w, ts)
        open_inc = inc is not None and inc["first"] - corr.timespan_s <= ts <= inc["until"]
    if window is None:
        return st, out
    if open_inc and inc is not None:
        # a repeated match: the new event joins the open incident (not part of it: a
        # known event returned as a duplicate above, and the incident has not changed)
        _add_to_incident(inc, corr, entry, limits, known_new=True)
        inc.setdefault("key", hit["k"])  # states from before incidents carried their key
        inc["version"] += 1
        out.incident = inc
    else:
        if inc is not None:
            _remember_past(st, inc)
        inc = _new_incident(corr, rules, hit, window, limits)
        inc["version"] = 1
        st["inc"] = inc
        out.incident = inc
        out.new_incident = True
    out.chained = _chain(rules, corr, inc)
    return st, out


def _remember_past(st: GroupState, inc: dict[str, Any]) -> None:
    """Keep the id and last version of an incident the group leaves behind (bounded)."""
    past: dict[str, int] = st.setdefault("past", {})
    past[inc["id"]] = inc["version"]
    while len(past) > MAX_PAST_INCIDENTS:
        del past[next(iter(past))]


def idle_groups(
    states: Iterable[tuple[str, GroupState]], now: float, idle_s: float
) -> tuple[list[str], list[str]]:
    """Group states to forget, and those to stamp: ``(idle, unstamped)``.

    A group no hit has changed for ``idle_s`` seconds of wall clock (:data:`SEEN`) is idle:
    forgotten, its next event starts a fresh window. Wall clock, not event time: one
    product with a wrong clock cannot age out every other group, and a product's weekly
    upload of week-old events still meets its group if ``idle_s`` is longer than a week.
    A state written before states were stamped starts its idle time now (the caller
    stamps and writes it).
    """
    idle: list[str] = []
    unstamped: list[str] = []
    for key, state in states:
        seen = state.get(SEEN)
        if seen is None:
            unstamped.append(key)
        elif now - float(seen) >= idle_s:
            idle.append(key)
    return idle, unstamped


def make_status_hit(
    *,
    group_key: str,
    incident_id: str,
    account_id: str,
    status: str,
    note: str,
    changed_by: str,
    changed_at: float,
    change_id: str,
) -> Hit:
    """A triage decision as a hit of the incident's group (see :func:`apply_status`)."""
    if status not in STATUSES:
        raise ValueError(f"unknown incident status {status!r}")
    return {
        "x": STATUS_HIT,
        "k": group_key,
        "i": incident_id,
        "a": account_id,
        "st": status,
        "n": note,
        "by": changed_by,
        "t": changed_at,
        "e": change_id,
    }


def set_status(inc: dict[str, Any], hit: Hit) -> bool:
    """Apply a status hit's decision to ``inc``; False if it changes nothing (a replay, or
    the same decision again)."""
    if (inc.get("status", "new"), inc.get("note", "")) == (hit["st"], hit["n"]):
        return False
    inc["status"] = hit["st"]
    inc["note"] = hit["n"]
    inc["by"] = hit["by"]
    inc["changed_at"] = hit["t"]
    inc["version"] += 1
    return True


def apply_status(state: GroupState | None, hit: Hit) -> tuple[GroupState | None, Outcome]:
    """Apply a status hit to its group: the group's current incident changes here (the
    group's one writer, so a later match sees the decision); an earlier one is
    ``detached`` (the caller changes its stored copy)."""
    out = Outcome()
    inc = state.get("inc") if state is not None else None
    if state is None or inc is None or inc["id"] != hit["i"]:
        past = state.get("past", {}) if state is not None else {}
        out.detached = int(past.get(hit["i"], 0))
        return state, out
    if inc["account_id"] != hit["a"]:
        out.late_reason = "it names another account than its incident's"
        return state, out
    if set_status(inc, hit):
        out.incident = inc
    else:
        out.duplicate = True
    return state, out


def _chain(rules: RuleSet, corr: CorrelationRule, inc: dict[str, Any]) -> list[Hit]:
    hits: list[Hit] = []
    for consumer_id in rules.consumers.get(corr.meta.rule_id, ()):
        consumer = rules.correlations[consumer_id]
        first_ep = inc["endpoints"][0] if inc["endpoints"] else ["", "", ""]
        fields: dict[str, Any] = dict(inc["group"])
        fields.update(endpoint_host=first_ep[0], endpoint_ip=first_ep[1], endpoint_mac=first_ep[2])
        hits.append(
            make_hit(
                consumer,
                corr.meta.rule_id,
                account_id=inc["account_id"],
                event_id=inc["id"],
                ts=inc["first"],
                fields=fields,
                summary=f"{corr.meta.title} (incident {inc['id'][:12]})",
            )
        )
    return hits


@dataclass
class BatchOutcome:
    """What applying a batch of hits did (:func:`apply_batch`); hits are named by the index
    of the record they came in, for the caller's dead letters."""

    states: dict[str, GroupState] = field(default_factory=dict)
    """Changed group states, to write once each."""
    changed: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)
    """Incident id -> (its newest version, opened in this batch): to publish once each."""
    chained: list[Hit] = field(default_factory=list)
    """Hits for correlations that reference the ones that fired."""
    detached: list[tuple[int, Hit, int]] = field(default_factory=list)
    """Status hits for incidents their group left behind, with the group's last version."""
    late: list[tuple[Hit, str]] = field(default_factory=list)
    """Detection hits too late for their group's window, with the reason."""
    refused: list[tuple[int, Hit, str]] = field(default_factory=list)
    """Hits that raised (a bad hit, not the batch), with the reason."""
    refused_status: list[tuple[int, Hit, str]] = field(default_factory=list)
    """Status hits that cannot apply, with the reason."""


def apply_batch(
    rules: RuleSet,
    stored: Mapping[str, GroupState | None],
    hits: Iterable[tuple[int, Hit]],
    limits: Limits,
) -> BatchOutcome:
    """Apply a batch of hits, ``(record index, hit)`` in order, over the group states in
    ``stored``: each hit sees the state the ones before it left. Nothing is added to
    ``stored`` (the caller writes ``states``), though a stored state is changed in place,
    as :func:`apply_hit` changes the state it is given. A hot group (an outbreak touches
    one group per threat) changes many times in a batch: it is written once, and each
    changed incident published once, newest version."""
    out = BatchOutcome()
    states = out.states
    changed = out.changed
    for index, hit in hits:
        status = hit.get("x") == STATUS_HIT
        try:
            key = hit["k"]
            prior = states[key] if key in states else stored.get(key)
            if status:
                status_state, applied = apply_status(prior, hit)
            else:
                state, applied = apply_hit(rules, prior, hit, limits)
        except Exception as exc:  # noqa: BLE001 - one bad hit, not the batch
            out.refused.append((index, hit, f"handler failed: {exc!r}"))
            continue
        inc = applied.incident
        if status:
            # a triage decision: the group's current incident changes here
            if applied.detached is not None:
                out.detached.append((index, hit, applied.detached))
            elif applied.late_reason:
                reason = f"status change not applied: {applied.late_reason}"
                out.refused_status.append((index, hit, reason))
            elif status_state is not None and inc is not None:
                states[key] = status_state
                changed[inc["id"]] = (inc, changed.get(inc["id"], (inc, False))[1])
            continue
        if applied.late_reason:
            out.late.append((hit, applied.late_reason))
            continue
        if not applied.duplicate:
            states[key] = state
        if inc is not None:
            opened = applied.new_incident or changed.get(inc["id"], (inc, False))[1]
            changed[inc["id"]] = (inc, opened)
        out.chained.extend(applied.chained)
    return out


class MemoryCorrelator:
    """Both stages over an in-memory state dict: the reference the streaming app follows.

    Used by unit tests and the benchmark's pure mode; the faust app does the same with a
    repartitioned topic and a table.
    """

    def __init__(self, rules: RuleSet, limits: Limits | None = None) -> None:
        self.rules = rules
        self.limits = limits or Limits()
        self.state: dict[str, GroupState] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.late: list[tuple[Hit, str]] = []
        self.published: list[dict[str, Any]] = []

    def process(self, event: Event) -> list[dict[str, Any]]:
        """Feed one event; returns the incidents it created or updated."""
        changed: list[dict[str, Any]] = []
        queue = hits_for_event(self.rules, event)
        while queue:
            hit = queue.pop(0)
            st, out = apply_hit(self.rules, self.state.get(hit["k"]), hit, self.limits)
            self.state[hit["k"]] = st
            if out.late_reason:
                self.late.append((hit, out.late_reason))
            if out.incident is not None:
                self.incidents[out.incident["id"]] = out.incident
                self.published.append({"id": out.incident["id"], "v": out.incident["version"]})
                changed.append(out.incident)
            queue.extend(out.chained)
        return changed

    def triage(self, incident_id: str, status: str, note: str = "", *, by: str = "u1") -> bool:
        """Apply a triage decision as the app does (a status hit to the incident's group;
        an incident the group left behind changes as stored); True if it changed."""
        inc = self.incidents[incident_id]
        hit = make_status_hit(
            group_key=inc["key"],
            incident_id=incident_id,
            account_id=inc["account_id"],
            status=status,
            note=note,
            changed_by=by,
            changed_at=float(inc["last"]),
            change_id=f"chg-{len(self.published)}",
        )
        _state, out = apply_status(self.state.get(hit["k"]), hit)
        if out.late_reason:
            raise ValueError(out.late_reason)
        changed = out.incident is not None or (out.detached is not None and set_status(inc, hit))
        if changed:
            self.published.append({"id": inc["id"], "v": inc["version"]})
        return changed

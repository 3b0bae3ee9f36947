"""Triage decisions: status hits applied by the group's writer, closed incidents not extended."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tmsp.events.v1 import envelope_pb2, incidents_pb2
from tmsp_common.kafka.envelope import EnvelopeError, set_epoch_seconds
from tmsp_correlator.domain.correlation import (
    MAX_PAST_INCIDENTS,
    Limits,
    MemoryCorrelator,
    apply_batch,
    apply_status,
    hits_for_event,
    make_status_hit,
)
from tmsp_correlator.domain.rules import load_rules
from tmsp_correlator.service_layer.events import status_hit
from tmsp_correlator.service_layer.incidents import incident_from_message, incident_message

DETECTION = """
title: High severity detection
name: high
logsource: {category: detection}
level: high
detection:
  s:
    severity: [high, critical]
  condition: s
---
title: Burst
name: burst
level: critical
correlation:
  type: event_count
  rules: [high]
  group-by: [Hostname]
  timespan: 5m
  condition: {gte: 3}
"""


def high(eid: str, t: float, host: str = "h1") -> dict[str, Any]:
    return {
        "event_type": "detection",
        "product_kind": "threat_discovery_appliance",
        "account_id": "acc1",
        "endpoint_host": host,
        "severity": "high",
        "event_id": eid,
        "ts": t,
    }


def correlator(*events: dict[str, Any]) -> MemoryCorrelator:
    mc = MemoryCorrelator(load_rules([("rules.yml", DETECTION)]), Limits(allowed_lateness_s=600))
    feed(mc, *events)
    return mc


def feed(mc: MemoryCorrelator, *events: dict[str, Any]) -> None:
    for e in events:
        mc.process(e)


def incidents(mc: MemoryCorrelator) -> list[tuple[list[str], str]]:
    """(event ids, status) of every incident, by first event."""
    return sorted((inc["event_ids"], inc["status"]) for inc in mc.incidents.values())


def only(mc: MemoryCorrelator) -> dict[str, Any]:
    (inc,) = mc.incidents.values()
    return inc


BURST = [high("a", 0), high("b", 10), high("c", 20)]


def decision(inc: dict[str, Any], status: str, account_id: str = "acc1") -> dict[str, Any]:
    """A status hit for ``inc`` (as the app makes one from an IncidentStatusChange)."""
    return make_status_hit(
        group_key=inc["key"],
        incident_id=inc["id"],
        account_id=account_id,
        status=status,
        note="",
        changed_by="u1",
        changed_at=500.0,
        change_id="chg-1",
    )


@pytest.mark.parametrize("status", ["resolved", "false_positive"])
def test_a_closed_incident_is_not_extended_and_fresh_events_open_the_next(status: str) -> None:
    mc = correlator(*BURST)
    first = only(mc)
    assert mc.triage(first["id"], status, "handled")
    # d and e would extend an open incident; after closing they wait for a third event
    feed(mc, high("d", 30), high("e", 40))
    assert incidents(mc) == [(["a", "b", "c"], status)]
    feed(mc, high("f", 50))
    assert incidents(mc) == [(["a", "b", "c"], status), (["d", "e", "f"], "new")]
    second = next(i for i in mc.incidents.values() if i["id"] != first["id"])
    assert second["count"] == 3 and second["first"] == 30
    assert first["count"] == 3 and first["version"] == 2


def test_an_event_within_a_closed_incident_is_not_counted_again() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    mc.triage(inc["id"], "resolved")
    feed(mc, high("x", 15), high("y", 18), high("z", 19))  # out of order, before c
    assert incidents(mc) == [(["a", "b", "c"], "resolved")]


def test_investigating_keeps_it_open_and_reopening_a_resolved_one_extends_it_again() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    assert mc.triage(inc["id"], "investigating", "looking")
    feed(mc, high("d", 30))
    assert incidents(mc) == [(["a", "b", "c", "d"], "investigating")]
    assert inc["note"] == "looking" and inc["by"] == "u1"
    mc.triage(inc["id"], "resolved")
    mc.triage(inc["id"], "new", "came back")
    feed(mc, high("e", 40))
    assert incidents(mc) == [(["a", "b", "c", "d", "e"], "new")]
    # opened by c, investigating, d, resolved, new again, e: one version each
    assert [p["v"] for p in mc.published if p["id"] == inc["id"]] == [1, 2, 3, 4, 5, 6]


def test_the_same_decision_again_changes_nothing() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    assert mc.triage(inc["id"], "resolved", "done")
    version = inc["version"]
    assert not mc.triage(inc["id"], "resolved", "done")
    assert inc["version"] == version
    assert mc.triage(inc["id"], "resolved", "done, with a better note")
    assert inc["version"] == version + 1


def test_an_incident_the_group_left_behind_is_detached_with_its_last_version() -> None:
    mc = correlator(*BURST)
    old = only(mc)
    # more than a timespan after the incident: the group opens another one
    feed(mc, high("d", 400), high("e", 410), high("f", 420))
    assert len(mc.incidents) == 2
    state = mc.state[old["key"]]
    assert state["inc"]["id"] != old["id"]
    assert state["past"] == {old["id"]: old["version"]}
    _, out = apply_status(state, decision(old, "false_positive"))
    assert out.detached == old["version"] and out.incident is None
    assert mc.triage(old["id"], "false_positive")
    assert state["inc"]["status"] == "new"  # the current incident is untouched


def test_a_group_remembers_a_bounded_number_of_past_incidents() -> None:
    mc = correlator()
    for n in range(MAX_PAST_INCIDENTS + 3):
        t = n * 1000.0
        feed(mc, high(f"{n}a", t), high(f"{n}b", t + 1), high(f"{n}c", t + 2))
    (state,) = mc.state.values()
    assert len(mc.incidents) == MAX_PAST_INCIDENTS + 3
    assert len(state["past"]) == MAX_PAST_INCIDENTS
    assert state["inc"]["id"] not in state["past"]


def test_a_status_hit_of_another_account_is_refused() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    _, out = apply_status(mc.state[inc["key"]], decision(inc, "resolved", account_id="acc2"))
    assert out.late_reason and out.incident is None
    assert inc["status"] == "new"


def test_a_triaged_state_survives_the_changelog_round_trip() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    mc.triage(inc["id"], "resolved", "ok")
    key = inc["key"]
    mc.state[key] = json.loads(json.dumps(mc.state[key]))
    mc.incidents = {inc["id"]: mc.state[key]["inc"]}
    feed(mc, high("d", 30), high("e", 40), high("f", 50))
    assert incidents(mc) == [(["a", "b", "c"], "resolved"), (["d", "e", "f"], "new")]


def change(**fields: Any) -> incidents_pb2.IncidentStatusChange:
    base: dict[str, Any] = {
        "change_id": "chg-1",
        "incident_id": "i1",
        "account_id": "acc1",
        "group_key": 'acc1|burst|["h1"]',
        "status": incidents_pb2.INCIDENT_STATUS_RESOLVED,
        "note": "patched",
        "changed_by_user_id": "u1",
    }
    base.update(fields)
    msg = incidents_pb2.IncidentStatusChange(**base)
    set_epoch_seconds(msg.requested_at, 1700000000.5)
    return msg


def test_a_status_change_becomes_a_status_hit_of_its_group() -> None:
    hit = status_hit(envelope_pb2.Envelope(account_id="acc1"), change())
    assert hit["k"] == 'acc1|burst|["h1"]' and hit["i"] == "i1" and hit["st"] == "resolved"
    assert hit["n"] == "patched" and hit["by"] == "u1" and hit["t"] == 1700000000.5
    assert hit["e"] == "chg-1" and hit["a"] == "acc1"


@pytest.mark.parametrize(
    ("env_account", "fields", "reason"),
    [
        ("acc1", {"group_key": ""}, "without group_key"),
        ("acc1", {"incident_id": ""}, "without incident_id"),
        ("acc1", {"group_key": 'acc2|burst|["h1"]'}, "group key of another account"),
        ("acc1", {"status": incidents_pb2.INCIDENT_STATUS_UNSPECIFIED}, "unknown status"),
        ("acc2", {}, "different accounts"),
    ],
)
def test_a_status_change_that_cannot_apply_is_refused(
    env_account: str, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        status_hit(envelope_pb2.Envelope(account_id=env_account), change(**fields))


def test_the_bus_form_carries_the_group_key_and_the_last_decision() -> None:
    mc = correlator(*BURST)
    inc = only(mc)
    msg = incident_message(inc, datetime.now(UTC))
    assert msg.group_key == inc["key"] and not msg.HasField("status_changed_at")
    mc.triage(inc["id"], "false_positive", "test traffic", by="analyst-7")
    msg = incident_message(inc, datetime.now(UTC))
    assert msg.status == incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE
    assert (msg.status_note, msg.status_changed_by_user_id) == ("test traffic", "analyst-7")
    back = incident_from_message(msg)
    assert {k: back[k] for k in ("key", "status", "note", "by", "changed_at", "version")} == {
        k: inc[k] for k in ("key", "status", "note", "by", "changed_at", "version")
    }


def test_a_batch_writes_each_changed_group_once_and_publishes_each_incident_once() -> None:
    """The correlate stage's batch step: a burst, its decision and a replay in one batch,
    beside a bad hit, a late one and decisions that cannot apply; the bad ones are named by
    the record they came in, the rest of the batch counts."""
    rules = load_rules([("rules.yml", DETECTION)])
    limits = Limits(allowed_lateness_s=600)
    mc = correlator(*BURST)
    inc = only(mc)
    hits = [hits_for_event(rules, e) for e in [*BURST, high("d", 30), high("old", -1000)]]
    bad = {**hits[0][0], "t": "not a time"}
    stranger = decision(inc, "investigating", account_id="acc2")
    batch = [
        (0, hits[0][0]),
        (0, hits[1][0]),
        (1, hits[2][0]),  # the third: opens the incident
        (1, decision(inc, "investigating")),  # decided within the batch that opened it
        (2, hits[2][0]),  # a replay of the third
        (2, bad),
        (3, hits[3][0]),  # joins the open incident
        (3, stranger),
        (4, hits[4][0]),  # over 600 s behind the group's newest event
        (4, {**decision(inc, "resolved"), "i": "gone"}),
    ]
    done = apply_batch(rules, {}, batch, limits)
    (key,) = done.states
    assert key == inc["key"] and [e[2] for e in done.states[key]["w"]] == ["a", "b", "c", "d"]
    ((published, opened),) = done.changed.values()
    assert opened and published["id"] == inc["id"]
    assert published["status"] == "investigating" and published["count"] == 4
    assert [(i, h["e"]) for i, h, _ in done.refused] == [(2, "a")]
    assert "handler failed: ValueError" in done.refused[0][2]
    assert [(i, reason) for i, _h, reason in done.refused_status] == [
        (3, "status change not applied: it names another account than its incident's")
    ]
    assert [(h["e"], reason.split(":")[0]) for h, reason in done.late] == [("old", "late event")]
    assert [(i, h["i"], version) for i, h, version in done.detached] == [(4, "gone", 0)]
    assert done.chained == []


def test_a_batch_starts_from_the_stored_states_and_leaves_the_store_as_it_was() -> None:
    rules = load_rules([("rules.yml", DETECTION)])
    limits = Limits(allowed_lateness_s=600)
    first = apply_batch(rules, {}, [(0, hits_for_event(rules, e)[0]) for e in BURST[:2]], limits)
    stored = dict(first.states)
    then = apply_batch(rules, stored, [(0, hits_for_event(rules, BURST[2])[0])], limits)
    ((inc, opened),) = then.changed.values()
    assert opened and inc["event_ids"] == ["a", "b", "c"]
    assert stored.keys() == first.states.keys()

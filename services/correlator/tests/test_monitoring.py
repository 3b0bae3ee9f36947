# ruff: noqa: E501  (tables and fakes read best one per line)
"""Nonconforming endpoints, product liveness and live incident counts: use cases with fakes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from tmsp.events.v1 import incidents_pb2
from tmsp_common.kafka.envelope import wrap
from tmsp_common.kafka.topics import (
    INCIDENT_COUNTS,
    INCIDENTS,
    NONCONFORMING_ENDPOINTS,
    PRODUCT_LIVENESS,
    Topic,
)
from tmsp_correlator.config import DEFAULT_RULES_DIR
from tmsp_correlator.domain.correlation import OPEN_STATUSES, MemoryCorrelator, make_status_hit
from tmsp_correlator.domain.liveness import LivenessPolicy, due_transitions
from tmsp_correlator.domain.nonconforming import MitigationFact, apply_result, endpoint_key
from tmsp_correlator.domain.rules import load_rule_directory
from tmsp_correlator.service_layer.events import detection_event
from tmsp_correlator.service_layer.incidents import (
    IncidentRecorder,
    StatusChangeRefused,
    incident_from_message,
    incident_message,
)
from tmsp_correlator.service_layer.monitoring import NonconformingEndpoints, ProductLiveness
from tmsp_correlator.testing import detection

PACK = Path(DEFAULT_RULES_DIR)


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Message, str]] = []

    async def publish(
        self,
        topic: Topic,
        payload: Message,
        *,
        key: str,
        account_id: str = "",
        occurred_at: datetime | None = None,
    ) -> None:
        self.sent.append((topic, payload, key))


class FakeNonconforming:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        d = self.docs.get(key)
        return dict(d) if d else None

    async def put(self, key: str, state: dict[str, Any], expected_version: int) -> bool:
        current = self.docs.get(key)
        if (current.get("version", 0) if current else 0) != expected_version:
            return False
        self.docs[key] = dict(state)
        return True


class FakeLiveness:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def heartbeat(
        self,
        product_id: str,
        account_id: str,
        at: float,
        interval_s: float | None,
        compliance: bool | None,
    ) -> dict[str, Any] | None:
        before = self.docs.get(product_id)
        doc = dict(before or {"_id": product_id})
        doc["last_heartbeat_at"] = max(at, doc.get("last_heartbeat_at", at))
        doc["account_id"] = account_id
        if interval_s:
            doc["heartbeat_interval_s"] = interval_s
        self.docs[product_id] = doc
        return dict(before) if before else None

    async def upload(self, product_id: str, account_id: str, at: float) -> dict[str, Any] | None:
        before = self.docs.get(product_id)
        doc = dict(before or {"_id": product_id})
        doc["last_upload_at"] = max(at, doc.get("last_upload_at", at))
        self.docs[product_id] = doc
        return dict(before) if before else None

    async def product(
        self,
        product_id: str,
        account_id: str,
        heartbeat_interval_s: float,
        upload_frequency_s: float,
        deregistered: bool,
    ) -> None:
        doc = self.docs.setdefault(product_id, {"_id": product_id})
        doc.update(
            account_id=account_id,
            heartbeat_interval_s=heartbeat_interval_s,
            deregistered=deregistered,
        )

    async def mark(self, product_id: str, expect: dict[str, Any], change: dict[str, Any]) -> bool:
        doc = self.docs.get(product_id)
        if doc is None or any(doc.get(k) != v for k, v in expect.items()):
            return False
        doc.update(change)
        return True

    async def scan(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.docs.values()]

    async def get(self, product_id: str) -> dict[str, Any] | None:
        return self.docs.get(product_id)


def fact(outcome: str, ts: float, threat: str = "TROJ_A", host: str = "pc1") -> MitigationFact:
    return MitigationFact("acc", "tm1", (host, "", ""), threat, outcome, ts)


NONCONFORMING = [
    ("failed makes it nonconforming", [("failed", 1)], False, ["TROJ_A"]),
    ("unresolved makes it nonconforming", [("unresolved", 1)], False, ["TROJ_A"]),
    ("cleaned alone changes nothing", [("cleaned", 1)], True, []),
    ("later cleaned clears", [("failed", 1), ("cleaned", 2)], True, []),
    ("older cleaned does not clear", [("failed", 5), ("cleaned", 2)], False, ["TROJ_A"]),
]


@pytest.mark.parametrize(
    ("name", "steps", "cleared", "threats"), NONCONFORMING, ids=[n[0] for n in NONCONFORMING]
)
def test_nonconforming_transitions(
    name: str, steps: list[tuple[str, float]], cleared: bool, threats: list[str]
) -> None:
    state = None
    for outcome, ts in steps:
        state, _ = apply_result(state, fact(outcome, ts))
    assert state is not None
    assert state["cleared"] is cleared
    assert sorted(state["threats"]) == threats


def test_endpoint_cleared_only_when_every_threat_is_cleaned() -> None:
    state, _ = apply_result(None, fact("failed", 1, "A"))
    state, _ = apply_result(state, fact("unresolved", 2, "B"))
    state, changed = apply_result(state, fact("cleaned", 3, "A"))
    assert changed and not state["cleared"] and list(state["threats"]) == ["B"]
    state, _ = apply_result(state, fact("cleaned", 4, "B"))
    assert state["cleared"]


async def test_nonconforming_use_case_publishes_changes_once() -> None:
    pub, repo = FakePublisher(), FakeNonconforming()
    uc = NonconformingEndpoints(repo, pub)
    assert await uc.apply(fact("failed", 1))
    assert not await uc.apply(fact("failed", 1))  # replay: no change, no publish
    assert await uc.apply(fact("cleaned", 2))
    msgs = [m for t, m, _ in pub.sent if t is NONCONFORMING_ENDPOINTS]
    assert [m.cleared for m in msgs] == [False, True]  # type: ignore[attr-defined]
    assert msgs[0].reason == incidents_pb2.NONCONFORMING_REASON_MITIGATION_FAILED  # type: ignore[attr-defined]
    assert pub.sent[0][2] == f"acc/{endpoint_key('pc1', '', '')}"


POLICY = LivenessPolicy(offline_multiple=3, default_heartbeat_interval_s=60, logs_timeout_s=600)


@pytest.mark.parametrize(
    ("doc", "now", "expected"),
    [
        ({"last_heartbeat_at": 0.0}, 179.0, []),
        ({"last_heartbeat_at": 0.0}, 181.0, ["offline"]),
        ({"last_heartbeat_at": 0.0, "heartbeat_interval_s": 120}, 300.0, []),
        ({"last_heartbeat_at": 0.0, "state": "offline"}, 1000.0, []),
        ({"last_upload_at": 0.0}, 601.0, ["logs_not_received"]),
        ({"last_upload_at": 0.0, "logs_missing": True}, 601.0, []),
        ({"last_upload_at": 0.0, "upload_frequency_s": 3600}, 601.0, []),
        ({"last_heartbeat_at": 0.0, "deregistered": True}, 1000.0, []),
    ],
)
def test_liveness_due_transitions(doc: dict[str, Any], now: float, expected: list[str]) -> None:
    assert due_transitions(doc, now, POLICY) == expected


async def test_liveness_offline_then_online_then_logs() -> None:
    pub, repo = FakePublisher(), FakeLiveness()
    uc = ProductLiveness(repo, pub, POLICY)
    await uc.heartbeat("p1", "acc", 0.0, 60.0)
    await uc.heartbeat("p1", "acc", 60.0, 60.0)  # already online: nothing new
    await uc.upload("p1", "acc", 0.0)
    assert await uc.check(100.0) == 0
    assert await uc.check(300.0) == 1
    assert await uc.check(301.0) == 0  # published once
    await uc.heartbeat("p1", "acc", 302.0, 60.0)
    assert await uc.check(700.0) == 2  # offline again (last heartbeat 302) and logs missing
    await uc.upload("p1", "acc", 701.0)
    states = [m.state for t, m, _ in pub.sent if t is PRODUCT_LIVENESS]  # type: ignore[attr-defined]
    S = incidents_pb2
    assert states == [
        S.PRODUCT_LIVENESS_STATE_ONLINE,
        S.PRODUCT_LIVENESS_STATE_OFFLINE,
        S.PRODUCT_LIVENESS_STATE_ONLINE,
        S.PRODUCT_LIVENESS_STATE_OFFLINE,
        S.PRODUCT_LIVENESS_STATE_LOGS_NOT_RECEIVED,
        S.PRODUCT_LIVENESS_STATE_LOGS_RESUMED,
    ]


class FakeIncidents:
    """Stores the newest version of each incident; counts what is stored, can be held."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.count_calls = 0
        self.fail_counts = 0
        self.hold_counts: asyncio.Event | None = None

    def forget(self) -> None:
        pass

    async def upsert_many(self, incidents: list[dict[str, Any]]) -> set[str]:
        stored = set()
        for inc in incidents:
            if self.docs.get(inc["id"], {}).get("version", 0) < inc["version"]:
                self.docs[inc["id"]] = {"status": "new", **inc}
                stored.add(inc["id"])
        return stored

    async def load(self, incident_id: str) -> dict[str, Any] | None:
        doc = self.docs.get(incident_id)
        return None if doc is None else dict(doc)

    async def counts(self, account_id: str) -> tuple[int, int]:
        self.count_calls += 1
        if self.fail_counts:
            self.fail_counts -= 1
            raise ConnectionError("store down")
        mine = [d for d in self.docs.values() if d["account_id"] == account_id]
        if self.hold_counts is not None:
            await self.hold_counts.wait()
        return sum(d["status"] in OPEN_STATUSES for d in mine), len(mine)

    async def all_counts(self) -> dict[str, tuple[int, int]]:
        return {a: await self.counts(a) for a in {d["account_id"] for d in self.docs.values()}}


def incident(iid: str, account: str = "acc1", version: int = 1) -> dict[str, Any]:
    return {
        "id": iid,
        "account_id": account,
        "rule_ids": ["r"],
        "title": "t",
        "severity": "high",
        "endpoints": [],
        "first": 1_790_000_000.0,
        "last": 1_790_000_001.0,
        "count": version,
        "event_ids": [],
        "timeline": [],
        "tags": [],
        "actions": [],
        "version": version,
    }


def message(iid: str, account: str = "acc1", version: int = 1) -> incidents_pb2.Incident:
    return incident_message(incident(iid, account, version), datetime.now(UTC))


def live_counts(pub: FakePublisher) -> list[tuple[str, int, int]]:
    return [
        (m.account_id, m.open_incidents, m.total_incidents)  # type: ignore[attr-defined]
        for t, m, _ in pub.sent
        if t is INCIDENT_COUNTS and not m.daily  # type: ignore[attr-defined]
    ]


async def test_throttled_live_counts_wait_for_the_tick_and_count_each_account_once() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub, live_count_interval_s=1.0)
    await rec.store_many([message("a1"), message("b1", "acc2")])
    await rec.store_many([message("a2")])
    await rec.store_many([message("a1", version=2)])
    # the incidents are stored at once, the counts not yet and not scanned for
    assert sorted(repo.docs) == ["a1", "a2", "b1"] and repo.docs["a1"]["version"] == 2
    assert live_counts(pub) == [] and repo.count_calls == 0
    assert await rec.publish_due_counts() == 2
    assert live_counts(pub) == [("acc1", 2, 2), ("acc2", 1, 1)]  # the last change counted
    assert await rec.publish_due_counts() == 0  # nothing new: no scan, no count
    await rec.store_many([message("a1", version=3)])  # an update adds no incident
    assert await rec.publish_due_counts() == 0
    assert repo.count_calls == 2


async def test_without_an_interval_every_batch_publishes_its_accounts_counts() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub)
    await rec.store_many([message("a1")])
    await rec.store_many([message("a2"), message("b1", "acc2")])
    assert live_counts(pub) == [("acc1", 1, 1), ("acc1", 2, 2), ("acc2", 1, 1)]


async def test_a_live_count_that_fails_stays_due_for_the_next_tick() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub, live_count_interval_s=1.0)
    await rec.store_many([message("a1"), message("b1", "acc2")])
    repo.fail_counts = 1
    with pytest.raises(ConnectionError):
        await rec.publish_due_counts()
    assert live_counts(pub) == []
    assert await rec.publish_due_counts() == 2
    assert live_counts(pub) == [("acc1", 1, 1), ("acc2", 1, 1)]


async def test_an_incident_stored_while_its_account_is_counted_is_counted_next_tick() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub, live_count_interval_s=1.0)
    await rec.store_many([message("a1")])
    repo.hold_counts = asyncio.Event()
    counting = asyncio.create_task(rec.publish_due_counts())
    await asyncio.sleep(0)  # the count has read the store and waits
    await rec.store_many([message("a2")])
    repo.hold_counts.set()
    assert await counting == 1
    assert live_counts(pub) == [("acc1", 1, 1)]
    assert await rec.publish_due_counts() == 1
    assert live_counts(pub) == [("acc1", 1, 1), ("acc1", 2, 2)]


class CountingIncidents(FakeIncidents):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, int]]] = []

    async def upsert_many(self, incidents: list[dict[str, Any]]) -> set[str]:
        self.batches.append([(i["id"], i["version"]) for i in incidents])
        return await super().upsert_many(incidents)


async def test_publishing_a_batch_publishes_each_change_and_stores_nothing() -> None:
    pub, repo = FakePublisher(), CountingIncidents()
    rec = IncidentRecorder(repo, pub)
    await rec.publish_many([(incident("a1"), True), (incident("b1", "acc2", version=4), False)])
    sent = [(m.incident_id, m.version) for t, m, _ in pub.sent if t is INCIDENTS]  # type: ignore[attr-defined]
    assert sent == [("a1", 1), ("b1", 4)]
    assert [k for t, _, k in pub.sent] == ["a1", "b1"]  # keyed by incident id
    assert repo.batches == [] and live_counts(pub) == []


async def test_a_store_batch_writes_each_incident_once_in_its_newest_version() -> None:
    pub, repo = FakePublisher(), CountingIncidents()
    rec = IncidentRecorder(repo, pub, live_count_interval_s=1.0)
    batch = [message("a1"), message("a1", version=3), message("b1", "acc2", version=2)]
    batch.append(message("a1", version=2))  # out of order: the newest still wins
    assert await rec.store_many(batch) == {"a1", "b1"}
    assert sorted(repo.batches[0]) == [("a1", 3), ("b1", 2)]
    # a1's version 1 was in the batch: its account gained an incident; b1 started elsewhere
    assert await rec.publish_due_counts() == 1
    assert live_counts(pub) == [("acc1", 1, 1)]
    # a replay of what is stored writes nothing
    assert await rec.store_many([message("a1", version=2)]) == set()


async def test_an_incident_comes_back_from_the_bus_as_it_was_published() -> None:
    mc = MemoryCorrelator(load_rule_directory(PACK))
    for i in range(4):
        det = detection(f"e{i}", 1_790_000_000.0 + i * 10.25, host="pc1", severity="high")
        env = wrap(det, producer="test", account_id="acc1", event_id=det.event_id)
        mc.process(detection_event(env, det))
    assert mc.incidents
    for inc in mc.incidents.values():
        back = incident_from_message(incident_message(inc, datetime.now(UTC)))
        assert back == {k: v for k, v in inc.items() if k != "until"}
        assert back["timeline"] and back["endpoints"] == [["pc1", "", ""]] and back["group"]


def test_an_endpoint_left_empty_is_still_present_on_the_bus() -> None:
    """Readers (the portal's timeline) tell "unknown endpoint" from "no endpoint" by field
    presence: an entry whose event named no host, ip or mac still carries an endpoint, and
    the sub-second part of event times survives."""
    inc = {
        "id": "i1",
        "account_id": "acc1",
        "rule_ids": ["r"],
        "title": "T",
        "severity": "high",
        "count": 2,
        "event_ids": ["e1", "e2"],
        "tags": [],
        "actions": [],
        "version": 1,
        "endpoints": [["", "10.0.0.9", ""]],
        "first": 1_790_000_000.25,
        "last": 1_790_000_001.999999999,
        "timeline": [
            [1_790_000_000.25, "e1", "r", "s", "", "", ""],
            [1_790_000_001.999999999, "e2", "r", "s", "", "10.0.0.9", ""],
        ],
    }
    msg = incident_message(inc, datetime.now(UTC))
    assert [t.HasField("endpoint") for t in msg.timeline] == [True, True]
    assert [t.endpoint.ip for t in msg.timeline] == ["", "10.0.0.9"]
    assert (msg.first_seen.seconds, msg.first_seen.nanos) == (1_790_000_000, 250_000_000)
    assert msg.last_seen.seconds == 1_790_000_002 and msg.last_seen.nanos < 1000
    assert incident_from_message(msg)["timeline"][0][0] == 1_790_000_000.25


def decision(iid: str, status: str, account: str = "acc1", note: str = "") -> dict[str, Any]:
    return make_status_hit(
        group_key=f'{account}|r|["h1"]',
        incident_id=iid,
        account_id=account,
        status=status,
        note=note,
        changed_by="u1",
        changed_at=1_790_000_100.0,
        change_id="chg-1",
    )


async def test_a_decision_on_a_left_behind_incident_goes_through_the_stored_copy() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub)
    await repo.upsert_many([incident("a1", version=3)])
    changed = await rec.set_status_detached(decision("a1", "resolved", note="ok"), 3, wait_s=0)
    assert changed is not None and changed["version"] == 4
    # stored before it is published: the next decision reads version 4
    assert repo.docs["a1"]["version"] == 4 and repo.docs["a1"]["status"] == "resolved"
    (published,) = [m for t, m, _ in pub.sent if t is INCIDENTS]
    assert published.version == 4  # type: ignore[attr-defined]
    assert published.status_note == "ok"  # type: ignore[attr-defined]
    # the same decision again changes and publishes nothing
    assert await rec.set_status_detached(decision("a1", "resolved", note="ok"), 4, wait_s=0) is None
    assert len([t for t, _, _ in pub.sent if t is INCIDENTS]) == 1


async def test_a_decision_waits_for_the_store_to_catch_up_and_refuses_what_cannot_apply() -> None:
    pub, repo = FakePublisher(), FakeIncidents()
    rec = IncidentRecorder(repo, pub)
    await repo.upsert_many([incident("a1", version=2)])

    async def catch_up() -> None:
        await asyncio.sleep(0.3)
        await repo.upsert_many([incident("a1", version=5)])

    # the group published version 5; the store still has 2 until catch_up stores it
    task = asyncio.create_task(catch_up())
    changed = await rec.set_status_detached(decision("a1", "investigating"), 5, wait_s=5)
    await task
    assert changed is not None and changed["version"] == 6
    with pytest.raises(StatusChangeRefused, match="not found in the correlator's store"):
        await rec.set_status_detached(decision("nope", "resolved"), 0, wait_s=0)
    with pytest.raises(StatusChangeRefused, match="version 6, not 9"):
        await rec.set_status_detached(decision("a1", "resolved"), 9, wait_s=0.3)
    with pytest.raises(StatusChangeRefused, match="another account"):
        await rec.set_status_detached(decision("a1", "resolved", account="acc2"), 0, wait_s=0)
    assert repo.docs["a1"]["status"] == "investigating"

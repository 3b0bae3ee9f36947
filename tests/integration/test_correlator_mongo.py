"""The correlator's Mongo adapter on the real Mongo-wire server (FerretDB locally)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.mongo import Document, close, connect
from tmsp_common.testing import Infra
from tmsp_correlator.adapters.mongo import (
    MongoIncidents,
    MongoMaintenance,
    MongoNonconforming,
    create_indexes,
    incident_update,
)
from tmsp_correlator.domain.nonconforming import MitigationFact, apply_result
from tmsp_correlator.service_layer.retention import LogRetention, Purged

pytestmark = [pytest.mark.integration, pytest.mark.mongo]


Repo = Callable[[AsyncDatabase[Document]], MongoIncidents]


@pytest.fixture(params=["update by id", "batch replace"])
def repo_of(request: pytest.FixtureRequest) -> Repo:
    """Both ways of changing stored incidents: MongoDB's updates, FerretDB's batch replace."""
    return functools.partial(MongoIncidents, replace_in_bulk=request.param == "batch replace")


@pytest.fixture
async def db(infra: Infra, names: Any) -> AsyncIterator[AsyncDatabase[Document]]:
    database = await connect(infra.mongo_url, names.database("corr_mongo"))
    await create_indexes(database)
    yield database
    await database.client.drop_database(database.name)
    await close(database)


def incident(iid: str, version: int, count: int = 3, account: str = "acc1") -> dict[str, Any]:
    return {
        "id": iid,
        "account_id": account,
        "rule_ids": ["burst", "high"],
        "title": "Burst",
        "description": "",
        "severity": "high",
        "group": {"endpoint_host": "pc1"},
        "endpoints": [["pc1", "", ""]],
        "first": 1_790_000_000.0,
        "last": 1_790_000_020.0,
        "count": count,
        "event_ids": [f"e{i}" for i in range(count)],
        "timeline": [
            [1_790_000_000.0 + i, f"e{i}", "high", "s", "pc1", "", ""] for i in range(count)
        ],
        "tags": ["attack.execution"],
        "actions": ["Isolate"],
        "status": "new",
        "version": version,
    }


async def test_batch_upsert_stores_new_and_newer_versions_and_skips_stale_ones(
    db: AsyncDatabase[Document],
    repo_of: Repo,
) -> None:
    repo = repo_of(db)
    assert await repo.upsert_many([incident("a", 1), incident("b", 2)]) == {"a", "b"}
    # a replay (same version), a stale one and a newer one in one batch
    stored = await repo.upsert_many([incident("a", 1), incident("b", 1), incident("a", 2, count=4)])
    assert stored == {"a"}
    a = await repo.get("a")
    b = await repo.get("b")
    assert a is not None and a["version"] == 2 and a["event_count"] == 4
    assert b is not None and b["version"] == 2 and b["event_count"] == 3


async def test_a_triaged_version_stores_its_decision_and_loads_back_as_the_state(
    db: AsyncDatabase[Document], repo_of: Repo
) -> None:
    """The correlator owns an incident's status (triage decisions reach it as status hits):
    a stored version carries status, note, who and when, and ``load`` gives back the state
    dict it was stored from (what a change to an incident its group left behind reads)."""
    repo = repo_of(db)
    await repo.upsert_many([incident("a", 1)])
    assert await repo.counts("acc1") == (1, 1)
    triaged = {
        **incident("a", 2, count=4),
        "status": "false_positive",
        "key": 'acc1|burst|["pc1"]',
        "note": "scanner",
        "by": "analyst-1",
        "changed_at": 1_790_000_100.25,
    }
    await repo.upsert_many([triaged])
    doc = await repo.get("a")
    assert doc is not None and doc["status"] == "false_positive" and doc["event_count"] == 4
    assert await repo.counts("acc1") == (0, 1)
    assert await repo.load("a") == triaged
    assert await repo.load("missing") is None
    # a later version without a decision (none was made) keeps the "new" it says
    await repo.upsert_many([incident("b", 1)])
    b = await repo.load("b")
    assert b is not None and b["status"] == "new" and "changed_at" not in b


async def test_a_repeated_incident_in_one_batch_is_stored_in_its_newest_version(
    db: AsyncDatabase[Document],
    repo_of: Repo,
) -> None:
    """The second copy meets a duplicate key on the insert and is then updated by _id."""
    repo = repo_of(db)
    stored = await repo.upsert_many([incident("x", 1), incident("x", 2, count=4)])
    assert "x" in stored
    doc = await repo.get("x")
    assert doc is not None and doc["version"] == 2 and doc["event_count"] == 4


async def test_new_incidents_are_inserted_as_an_upsert_would_store_them(
    db: AsyncDatabase[Document],
    repo_of: Repo,
) -> None:
    repo = repo_of(db)
    assert await repo.upsert_many([incident("ins", 1)]) == {"ins"}
    # the update form, as an upsert would store it
    await db["incidents"].update_one(
        {"_id": "ups"}, incident_update(incident("ups", 1)), upsert=True
    )
    inserted, upserted = await repo.get("ins"), await repo.get("ups")
    assert inserted is not None and upserted is not None
    volatile = {"_id", "created_at", "updated_at"}
    assert {k: v for k, v in inserted.items() if k not in volatile} == {
        k: v for k, v in upserted.items() if k not in volatile
    }
    assert inserted["status"] == "new" and inserted["created_at"] == inserted["updated_at"]


async def test_a_worker_that_remembers_nothing_skips_what_is_stored(
    db: AsyncDatabase[Document],
    repo_of: Repo,
) -> None:
    """After a restart every id is unknown: the inserts meet duplicate keys (FerretDB reports
    them per document in an unordered bulk insert) and only newer versions are written."""
    await repo_of(db).upsert_many([incident("a", 1), incident("b", 3)])
    restarted = repo_of(db)
    stored = await restarted.upsert_many(
        [incident("a", 1), incident("b", 2, count=9), incident("c", 1)]
    )
    assert stored == {"c"}
    b = await restarted.get("b")
    assert b is not None and b["version"] == 3 and b["event_count"] == 3
    investigating = {**incident("a", 2, count=5), "status": "investigating"}
    assert await repo_of(db).upsert_many([investigating]) == {"a"}
    a = await restarted.get("a")
    assert a is not None and a["version"] == 2 and a["event_count"] == 5
    assert a["status"] == "investigating"
    assert await db["incidents"].count_documents({}) == 3


async def test_counts_per_account_for_the_daily_update(
    db: AsyncDatabase[Document], repo_of: Repo
) -> None:
    repo = repo_of(db)
    await repo.upsert_many(
        [incident("a1", 1), incident("a2", 1), incident("b1", 1, account="acc2")]
    )
    await repo.upsert_many([{**incident("a2", 2), "status": "resolved"}])
    assert await repo.all_counts() == {"acc1": (1, 2), "acc2": (1, 1)}
    assert await repo.counts("acc1") == (1, 2)
    await repo.upsert_many([incident("a3", 1)])
    await repo.upsert_many([{**incident("a3", 2), "status": "investigating"}])
    assert await repo.counts("acc1") == (2, 3)
    assert await repo.counts("acc2") == (1, 1)
    assert await repo.counts("nobody") == (0, 0)


async def test_threat_names_with_dots_and_dollars_round_trip(
    db: AsyncDatabase[Document],
) -> None:
    repo = MongoNonconforming(db)
    endpoint = ("hr-lt-03", "10.0.0.3", "")
    state, _ = apply_result(
        None, MitigationFact("acc1", "tmi-1", endpoint, "TROJ_EMOTET.SM", "failed", 10.0)
    )
    state, _ = apply_result(
        state, MitigationFact("acc1", "tmi-1", endpoint, "$weird.name", "unresolved", 11.0)
    )
    state["version"] = 1
    assert await repo.put("acc1/hr-lt-03", state, 0)
    stored = await repo.get("acc1/hr-lt-03")
    assert stored is not None
    assert set(stored["threats"]) == {"TROJ_EMOTET.SM", "$weird.name"}
    assert stored["threats"]["TROJ_EMOTET.SM"]["outcome"] == "failed"
    assert stored["seen"]["$weird.name"] == 11.0

    cleaned, changed = apply_result(
        stored, MitigationFact("acc1", "tmi-1", endpoint, "TROJ_EMOTET.SM", "cleaned", 12.0)
    )
    assert changed
    cleaned["version"] = 2
    assert await repo.put("acc1/hr-lt-03", cleaned, 1)
    again = await repo.get("acc1/hr-lt-03")
    assert again is not None and set(again["threats"]) == {"$weird.name"}


async def test_a_worker_forgets_remembered_versions_when_its_partitions_are_revoked(
    db: AsyncDatabase[Document],
    repo_of: Repo,
) -> None:
    first, second = repo_of(db), repo_of(db)
    assert await first.upsert_many([incident("rebalanced", 2)]) == {"rebalanced"}
    # the partition moved: the other worker stores a newer version
    assert await second.upsert_many([incident("rebalanced", 5, count=5)]) == {"rebalanced"}
    first.forget()  # what the faust app does on on_partitions_revoked
    # a replay of an older version on the first worker must not overwrite the newer one
    assert await first.upsert_many([incident("rebalanced", 4, count=4)]) == set()
    stored = await db["incidents"].find_one({"_id": "rebalanced"})
    assert stored is not None and stored["version"] == 5 and stored["event_count"] == 5


async def test_a_batch_replace_keeps_creation_time_and_writes_each_newer_version(
    db: AsyncDatabase[Document],
) -> None:
    repo = MongoIncidents(db, replace_in_bulk=True)
    await repo.upsert_many([incident(f"r{n}", 1) for n in range(30)])
    before = {d["_id"]: d async for d in db["incidents"].find({})}
    batch = [incident(f"r{n}", 2, count=9) for n in range(20)] + [incident("r25", 1)]
    batch[7]["status"] = "false_positive"
    assert await repo.upsert_many(batch) == {f"r{n}" for n in range(20)}
    after = {d["_id"]: d async for d in db["incidents"].find({})}
    assert len(after) == 30
    assert {i: d["version"] for i, d in after.items()} == {
        f"r{n}": 2 if n < 20 else 1 for n in range(30)
    }
    assert all(after[i]["created_at"] == before[i]["created_at"] for i in after)
    assert after["r7"]["status"] == "false_positive" and after["r8"]["status"] == "new"
    assert after["r3"]["event_count"] == 9 and after["r25"]["event_count"] == 3


def seen_at(inc: dict[str, Any], last: float) -> dict[str, Any]:
    inc["first"] = inc["last"] = last
    inc["timeline"] = [[last, *entry[1:]] for entry in inc["timeline"]]
    return inc


async def test_log_maintenance_removes_old_incidents_and_cleared_endpoints_only(
    db: AsyncDatabase[Document], repo_of: Repo
) -> None:
    incidents, endpoints = repo_of(db), MongoNonconforming(db)
    retention = LogRetention(MongoMaintenance(db), incidents, endpoints)
    now = 1_800_000_000.0
    day = 86_400.0
    await incidents.upsert_many(
        [seen_at(incident("old", 1), now - 31 * day), seen_at(incident("recent", 1), now - day)]
    )
    cleared: dict[str, Any] = {
        "threats": {},
        "seen": {},
        "since": None,
        "cleared": True,
        "version": 1,
    }
    flagged = {**cleared, "cleared": False, "since": now - 60 * day}
    await endpoints.put("acc1/old-clean", {**cleared, "updated": now - 40 * day}, 0)
    await endpoints.put("acc1/recent-clean", {**cleared, "updated": now - day}, 0)
    await endpoints.put("acc1/still-flagged", {**flagged, "updated": now - 40 * day}, 0)

    # nothing heard from the portal yet: nothing is removed
    assert await retention.purge(now) is None
    assert await db["incidents"].count_documents({}) == 2

    assert await retention.heard(30, datetime(2026, 12, 1, tzinfo=UTC))
    purged = await retention.purge(now)
    assert purged == Purged(incidents=1, endpoints=1)
    assert {d["_id"] async for d in db["incidents"].find({}, {"_id": 1})} == {"recent"}
    assert {d["_id"] async for d in db["nonconforming_endpoints"].find({}, {"_id": 1})} == {
        "acc1/recent-clean",
        "acc1/still-flagged",  # not cleared: it stays whatever its age
    }
    # the removed incident's group matches again: its next version is stored afresh,
    # although this worker remembered having stored the removed one
    assert await incidents.upsert_many([seen_at(incident("old", 2, count=5), now)]) == {"old"}
    again = await incidents.get("old")
    assert again is not None and again["version"] == 2 and again["event_count"] == 5


async def test_a_worker_stores_an_incident_another_worker_removed(
    db: AsyncDatabase[Document], repo_of: Repo
) -> None:
    mine, leader = repo_of(db), repo_of(db)
    await mine.upsert_many([incident("shared", 1)])
    # the leader's log maintenance removes it; this worker still remembers version 1
    assert await leader.purge(datetime(2030, 1, 1, tzinfo=UTC)) == 1
    assert await mine.upsert_many([incident("shared", 2, count=6)]) == {"shared"}
    stored = await mine.get("shared")
    assert stored is not None and stored["version"] == 2 and stored["event_count"] == 6


async def test_log_maintenance_settings_keep_the_newest_change(
    db: AsyncDatabase[Document],
) -> None:
    settings = MongoMaintenance(db)
    assert await settings.log_retention() is None
    # the reporter's start-up record of never-changed defaults, then an operator's change
    assert await settings.set_log_retention(180, None)
    changed = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert await settings.set_log_retention(30, changed)
    # a replayed older change and the defaults published again at a restart lose
    assert not await settings.set_log_retention(90, datetime(2026, 11, 1, tzinfo=UTC))
    assert not await settings.set_log_retention(180, None)
    assert await settings.log_retention() == (30, changed)
    # a replay of the same change is kept (idempotent), a newer one wins
    assert await settings.set_log_retention(30, changed)
    assert await settings.set_log_retention(7, changed + timedelta(hours=1))
    assert await settings.log_retention() == (7, changed + timedelta(hours=1))

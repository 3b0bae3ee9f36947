"""The window-state table's store reads its changelog partitions itself (real broker): what
it recovers, where faust resumes, partitions that move away and come back, a broker it
cannot reach. The assignment is the one fake here: faust's assignor is told which changelog
partitions this worker has, as a rebalance would."""

from __future__ import annotations

import socket
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.topics import Topic
from tmsp_common.testing import Infra
from tmsp_correlator.adapters.hit_records import changelog_key, hit_partition, state_value
from tmsp_correlator.adapters.state_store import STORE_URL, ChangelogStore
from tmsp_correlator.entrypoints.faust_app import WINDOWS_TABLE

pytestmark = pytest.mark.integration

PARTITIONS = 2


def keys_in(partition: int, n: int) -> list[str]:
    """``n`` group keys whose changelog partition is ``partition``."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        key = f'acc1|rule|["host{i}"]'
        if hit_partition(key, PARTITIONS) == partition:
            out.append(key)
        i += 1
    return out


def state(*event_ids: str) -> dict[str, Any]:
    return {"w": [[1.0 + n, "r", eid, None, "", "h", "", ""] for n, eid in enumerate(event_ids)]}


class Changelog:
    """The table's changelog topic, written as the correlate agent writes it."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.name = name
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def write(self, key: str, value: dict[str, Any] | None) -> None:
        partition = hit_partition(key, PARTITIONS)
        encoded = None if value is None else state_value(value)
        await self.producer.send_and_wait(self.name, encoded, changelog_key(key), partition)


def store_of(app_id: str, bootstrap: str) -> tuple[faust.App, ChangelogStore]:
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store=STORE_URL)
    table = app.Table(WINDOWS_TABLE, default=None, partitions=PARTITIONS)
    store = table.data
    assert isinstance(store, ChangelogStore)
    return app, store


def assign(monkeypatch: pytest.MonkeyPatch, app: faust.App, topic: str, *parts: int) -> None:
    monkeypatch.setattr(app.assignor, "assigned_actives", lambda: {TP(topic, p) for p in parts})


async def test_the_store_recovers_its_partitions_and_reads_a_returning_one_again(
    infra: Infra, names: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = names.group("correlator")
    topic = f"{app_id}-{WINDOWS_TABLE}-changelog"
    await ensure_topics(
        infra.kafka_bootstrap,
        [Topic(topic, None, key="group key", partitions=PARTITIONS, has_dead_letter=False)],
    )
    a, b = keys_in(0, 2)
    c, d = keys_in(1, 2)
    log = Changelog(infra.kafka_bootstrap, topic)
    await log.producer.start()
    try:
        await log.write(a, state("e1"))
        await log.write(a, state("e1", "e2"))  # a newer state of the same group
        await log.write(b, state("e3"))
        await log.write(b, None)  # b forgotten (the idle sweep's tombstone)
        await log.write(c, state("e4"))

        app, store = store_of(app_id, infra.kafka_bootstrap)
        assign(monkeypatch, app, topic, 0, 1)
        await store.on_rebalance(set(), set(), set())
        assert dict(store.data) == {a: state("e1", "e2"), c: state("e4")}
        # faust resumes after the last offset read: nothing is left for its own recovery
        assert store.persisted_offset(TP(topic, 0)) == 3
        assert store.persisted_offset(TP(topic, 1)) == 0

        # partition 1 moves to another worker, which changes it meanwhile; partition 0
        # stays and gains a record, read from where the last reading stopped
        await log.write(a, state("e1", "e2", "e5"))
        await log.write(d, state("e6"))
        assign(monkeypatch, app, topic, 0)
        await store.on_rebalance(set(), set(), set())
        assert dict(store.data) == {a: state("e1", "e2", "e5")}
        assert store.persisted_offset(TP(topic, 0)) == 4
        assert store.persisted_offset(TP(topic, 1)) is None

        # partition 1 comes back: read again from its start, with the other worker's change
        assign(monkeypatch, app, topic, 0, 1)
        await store.on_rebalance(set(), set(), set())
        assert dict(store.data) == {a: state("e1", "e2", "e5"), c: state("e4"), d: state("e6")}
        assert store.persisted_offset(TP(topic, 0)) == 4
        assert store.persisted_offset(TP(topic, 1)) == 1
    finally:
        await log.producer.stop()


async def test_a_store_that_cannot_read_leaves_the_partitions_to_fausts_recovery(
    names: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    app_id = names.group("correlator")
    topic = f"{app_id}-{WINDOWS_TABLE}-changelog"
    app, store = store_of(app_id, closed)
    (stale,) = keys_in(1, 1)
    store.data[stale] = state("e2")  # left from an earlier assignment of the partition
    assign(monkeypatch, app, topic, 1)
    await store.on_rebalance(set(), set(), set())
    # the partition it could not read holds nothing of its own, and faust is given no
    # offset for it: faust's recovery reads it from the start
    assert dict(store.data) == {}
    assert store.persisted_offset(TP(topic, 1)) is None

"""The bus plumbing against the real broker: produce, consume, commit, dead-letter, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tmsp.events.v1 import detections_pb2
from tmsp_common.kafka import topics
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    ConsumedEvent,
    ConsumerRunner,
    ConsumerStopped,
    InvalidEvent,
)
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.testing import Infra, TopicReader, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

# One partition keeps "what was committed" easy to reason about in these tests.
SINGLE = topics.Topic(
    "tmsp.detections.v1", detections_pb2.Detection, key="product_id", partitions=1
)


@pytest.fixture
async def producer(infra: Infra, names: Any) -> AsyncIterator[EventProducer]:
    await ensure_topics(infra.kafka_bootstrap, [SINGLE], prefix=names.prefix)
    async with EventProducer(infra.kafka_bootstrap, service="test", topic_prefix=names.prefix) as p:
        yield p


def detection(i: int) -> detections_pb2.Detection:
    return detections_pb2.Detection(event_id=f"e{i}", account_id="a1", threat_name=f"T{i}")


async def publish(producer: EventProducer, start: int, stop: int) -> None:
    futs = [
        await producer.send(SINGLE, detection(i), key="p1", account_id="a1", event_id=f"e{i}")
        for i in range(start, stop)
    ]
    await asyncio.gather(*futs)


def runner(
    infra: Infra,
    names: Any,
    producer: EventProducer,
    handler: Callable[[list[ConsumedEvent[Any]]], Awaitable[None]],
    **kw: Any,
) -> ConsumerRunner:
    return ConsumerRunner(
        bootstrap=infra.kafka_bootstrap,
        group_id=names.group("g"),
        topics=[SINGLE],
        handler=handler,
        dead_letters=producer,
        topic_prefix=names.prefix,
        **kw,
    )


async def committed(infra: Infra, names: Any) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=infra.kafka_bootstrap, group_id=names.group("g"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(
            TopicPartition(SINGLE.qualified(names.prefix), 0)
        )
        return offset
    finally:
        await consumer.stop()


async def test_event_is_produced_consumed_and_committed(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    seen: list[ConsumedEvent[Any]] = []

    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        seen.extend(events)

    await publish(producer, 0, 1)
    stop = asyncio.Event()
    task = asyncio.create_task(runner(infra, names, producer, handle).run(stop))
    await wait_until(lambda: len(seen) == 1, timeout=30)
    stop.set()
    await task
    event = seen[0]
    assert event.payload.threat_name == "T0"
    assert event.envelope.event_id == "e0"
    assert event.envelope.account_id == "a1"
    assert event.envelope.producer == "test"
    assert await committed(infra, names) == 1


async def test_malformed_message_is_dead_lettered_with_headers_and_consumer_goes_on(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    seen: list[str] = []

    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        for e in events:
            if e.payload.threat_name == "T1":
                raise InvalidEvent(e, "threat T1 is not allowed")
            seen.append(e.payload.threat_name)

    garbage = await producer.send_raw(
        SINGLE.qualified(names.prefix), b"\x08\x96\x01garbage", key=b"p1", headers=[]
    )
    await garbage
    await publish(producer, 0, 3)
    stop = asyncio.Event()
    task = asyncio.create_task(runner(infra, names, producer, handle).run(stop))
    # The batch is re-handled without the bad record (handlers are idempotent).
    await wait_until(lambda: set(seen) == {"T0", "T2"}, timeout=30)
    stop.set()
    await task

    dlq = SINGLE.dead_letter
    assert dlq is not None
    async with TopicReader(infra.kafka_bootstrap, dlq, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 2)
    first, second = (dict(r.headers) for r in records[:2])
    assert records[0].value == b"\x08\x96\x01garbage"
    assert first[DLQ_TOPIC] == SINGLE.qualified(names.prefix).encode()
    assert first[DLQ_PARTITION] == b"0"
    assert first[DLQ_OFFSET] == b"0"
    assert b"not an envelope" in first[DLQ_REASON] or b"payload type" in first[DLQ_REASON]
    assert second[DLQ_OFFSET] == b"2"
    assert second[DLQ_REASON] == b"threat T1 is not allowed"
    assert "T1" not in seen
    assert await committed(infra, names) == 4


async def test_restart_rereads_nothing_committed_and_loses_nothing_uncommitted(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    await publish(producer, 0, 30)
    first_run: list[int] = []

    async def crash_at_17(events: list[ConsumedEvent[Any]]) -> None:
        for e in events:
            i = int(e.envelope.event_id[1:])
            if i == 17:
                raise RuntimeError("simulated crash before the side effect was stored")
        first_run.extend(int(e.envelope.event_id[1:]) for e in events)

    r1 = runner(infra, names, producer, crash_at_17, batch_size=5, max_consecutive_failures=1)
    with pytest.raises(ConsumerStopped, match="simulated crash"):
        await r1.run(asyncio.Event())
    assert first_run == list(range(15))
    assert await committed(infra, names) == 15

    second_run: list[int] = []

    async def record(events: list[ConsumedEvent[Any]]) -> None:
        second_run.extend(int(e.envelope.event_id[1:]) for e in events)

    stop = asyncio.Event()
    task = asyncio.create_task(runner(infra, names, producer, record, batch_size=5).run(stop))
    await wait_until(lambda: len(second_run) >= 15, timeout=30)
    stop.set()
    await task
    assert second_run == list(range(15, 30))
    assert await committed(infra, names) == 30


async def test_transient_handler_failure_is_retried_without_losing_the_batch(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    await publish(producer, 0, 3)
    attempts = 0
    stored: list[str] = []

    async def flaky(events: list[ConsumedEvent[Any]]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("database briefly away")
        stored.extend(e.envelope.event_id for e in events)

    stop = asyncio.Event()
    r = runner(infra, names, producer, flaky, retry_backoff_s=0.05)
    task = asyncio.create_task(r.run(stop))
    await wait_until(lambda: len(stored) == 3, timeout=30)
    stop.set()
    await task
    assert stored == ["e0", "e1", "e2"]
    assert attempts == 3


async def test_a_member_is_told_when_its_partitions_are_revoked(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    # a handler that caches what it wrote (the correlator's store stage) must forget it
    # once another member takes the partitions over
    revoked: list[str] = []

    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        return None

    first = runner(infra, names, producer, handle, on_revoked=lambda: revoked.append("first"))
    second = runner(infra, names, producer, handle)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop))]
    try:
        await asyncio.wait_for(first.ready.wait(), 30)
        assert revoked == []
        tasks.append(asyncio.create_task(second.run(stop)))  # the group rebalances
        await wait_until(lambda: revoked, timeout=30)
        assert set(revoked) == {"first"}
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_remove_leftovers_deletes_only_the_named_topics_and_databases(infra: Infra) -> None:
    """A test session removes its own topics and databases at its end, and nothing a session
    beside it named."""
    from aiokafka.admin import AIOKafkaAdminClient
    from pymongo import AsyncMongoClient

    from tmsp_common.testing import remove_leftovers, unique

    mine, theirs = unique("itmine"), unique("ittheirs")
    await ensure_topics(infra.kafka_bootstrap, [SINGLE], prefix=f"{mine}.")
    await ensure_topics(infra.kafka_bootstrap, [SINGLE], prefix=f"{theirs}.")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
    try:
        for name in (mine, theirs):
            await client[f"{name}_db"]["c"].insert_one({"x": 1})

        # the topic and its dead-letter topic, and the database
        assert await remove_leftovers(infra, [mine]) == (2, 1)

        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
        await admin.start()
        try:
            left = await wait_until(lambda: _topics_once_gone(admin, mine, theirs), timeout=30)
        finally:
            await admin.close()
        assert left == [f"{theirs}.tmsp.detections.v1", f"{theirs}.tmsp.detections.v1.dlq"]
        databases = await client.list_database_names()
        assert f"{mine}_db" not in databases
        assert f"{theirs}_db" in databases
    finally:
        await remove_leftovers(infra, [theirs])
        await client.close()


async def _topics_once_gone(admin: Any, gone: str, kept: str) -> list[str] | None:
    """The topics named after ``kept``, once none is left named after ``gone``."""
    topics = await admin.list_topics()
    if any(t.startswith(gone) for t in topics):
        return None
    return sorted(t for t in topics if t.startswith(kept))

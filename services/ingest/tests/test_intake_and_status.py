"""Upload and heartbeat use cases: dedup by content hash, failures, tasks."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest

from tmsp.events.v1 import status_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.errors import InvalidArgument, Unavailable
from tmsp_common.kafka import topics
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_ingest.domain.intake import UploadTooLarge
from tmsp_ingest.entrypoints.consumers import tasks_handler
from tmsp_ingest.service_layer.intake import UploadBuffer, UploadOutcome
from tmsp_ingest.service_layer.status import HeartbeatReport
from tmsp_ingest.testing import OPERATOR, REG, World

DATA = b"CEF:0|TM|TDA|1|1|A|5|src=1.1.1.1\nbad line\nCEF:0|TM|TDA|1|2|B|High|src=2.2.2.2\n"


async def test_upload_counts_and_dedup(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    first = await world.intake.ingest(product, "a.log", DATA, protocol=1)
    assert (first.accepted, first.rejected, first.duplicate) == (2, 1, False)
    assert [r.line for r in world.publisher.rejections] == [2]
    assert len(world.publisher.uploads) == 1
    again = await world.intake.ingest(product, "b.log", DATA, protocol=1)
    assert (again.accepted, again.rejected, again.duplicate) == (2, 1, True)
    assert len(world.publisher.events) == 2 and len(world.publisher.uploads) == 1


async def test_failed_bus_records_nothing_and_the_retry_lands(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    world.publisher.fail = True
    with pytest.raises(Unavailable):
        await world.intake.ingest(product, "a.log", DATA, protocol=1)
    assert world.ledger.items == {} and world.publisher.uploads == []
    world.publisher.fail = False
    outcome = await world.intake.ingest(product, "a.log", DATA, protocol=1)
    assert not outcome.duplicate and outcome.accepted == 2


async def test_gzip_upload_and_bad_gzip(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    outcome = await world.intake.ingest(product, "a.gz", gzip.compress(DATA), protocol=1)
    assert outcome.accepted == 2
    with pytest.raises(InvalidArgument, match="gzip"):
        await world.intake.ingest(product, "b.gz", gzip.compress(DATA)[:15], protocol=1)
    with pytest.raises(UploadTooLarge):
        await world.intake.ingest(product, "c.gz", gzip.compress(b"x" * 2_000_000), protocol=1)


async def test_heartbeat_hands_out_tasks_until_acknowledged(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    await world.tasks.add(
        status_pb2.MitigationTask(task_id="t1", product_id=product.product_id, kind=1)
    )
    await world.tasks.add(status_pb2.MitigationTask(task_id="t2", product_id="other", kind=1))
    report = HeartbeatReport("2.5.1", 100, True, {"logs_sent": 5}, [])
    answer = await world.status.heartbeat(product, report)
    assert answer.next_interval_seconds == 300
    assert [t.task_id for t in answer.tasks] == ["t1"]
    answer = await world.status.heartbeat(
        product, HeartbeatReport("2.5.1", 400, True, {}, ["t1", "t2"])
    )
    assert answer.tasks == []
    assert world.tasks.items["t2"][1] is False  # another product's task is untouched
    beat = world.publisher.heartbeats[0]
    assert beat.security_compliance_enabled is True and beat.counters["logs_sent"] == 5
    assert list(world.publisher.heartbeats[1].acknowledged_task_ids) == ["t1", "t2"]


async def test_a_retry_joins_the_unacknowledged_attempt_instead_of_publishing_again(
    world: World,
) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    release = asyncio.Event()
    publish = world.publisher.publish_records
    calls = 0

    async def slow_publish(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return await publish(*args, **kwargs)

    world.publisher.publish_records = slow_publish  # type: ignore[method-assign]
    world.intake.ack_timeout = 0.05
    with pytest.raises(Unavailable, match="not acknowledged"):
        await world.intake.ingest(product, "a.log", DATA, protocol=1)
    assert world.intake.in_flight == 1
    world.intake.ack_timeout = 5
    retry = asyncio.create_task(world.intake.ingest(product, "a.log", DATA, protocol=1))
    await asyncio.sleep(0.01)
    release.set()
    outcome = await retry
    assert calls == 1 and not outcome.duplicate and outcome.accepted == 2
    assert len(world.publisher.events) == 2 and world.intake.in_flight == 0


async def test_a_reservation_made_by_the_intake_is_released_when_a_twin_publishes(
    world: World,
) -> None:
    """Two uploads of the same content meet while reserving room: one publishes, and the
    other's reservation (made by the intake, no hold given) must not stay counted."""
    product, _ = await world.registry.register(OPERATOR, REG)
    acquire = world.intake.buffer.acquire

    async def yielding_acquire(nbytes: int, timeout: float) -> int:
        await asyncio.sleep(0)  # as when room is short: the other upload runs meanwhile
        return await acquire(nbytes, timeout)

    world.intake.buffer.acquire = yielding_acquire  # type: ignore[method-assign]
    first, second = await asyncio.gather(
        world.intake.ingest(product, "a.log", DATA, protocol=1),
        world.intake.ingest(product, "a.log", DATA, protocol=1),
    )
    assert first.accepted == second.accepted == 2
    assert len(world.publisher.events) == 2
    assert world.intake.buffer.held == 0


async def test_uploads_in_memory_are_bounded_while_kafka_does_not_acknowledge(
    world: World,
) -> None:
    """The publication keeps its share of the buffer after the client gave up; a new
    upload waits for room, then gets a retryable error; room comes back when it ends."""
    product, _ = await world.registry.register(OPERATOR, REG)
    release = asyncio.Event()
    publish = world.publisher.publish_records

    async def stuck_publish(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await publish(*args, **kwargs)

    world.publisher.publish_records = stuck_publish  # type: ignore[method-assign]
    world.intake.ack_timeout = 0.05
    world.intake.buffer = UploadBuffer(3 * len(DATA))

    async def upload(data: bytes) -> UploadOutcome:
        hold = world.intake.hold()
        try:
            await hold.add(len(data))  # as a session does before reading the upload
            return await world.intake.ingest(product, "a.log", data, protocol=1, hold=hold)
        finally:
            hold.release()

    with pytest.raises(Unavailable, match="not acknowledged"):
        await upload(DATA)
    assert world.intake.buffer.held == 2 * len(DATA)  # received + split lines
    other = DATA.replace(b"A", b"C")
    with pytest.raises(Unavailable, match="gateway busy"):
        await upload(other)
    assert world.intake.buffer.held == 2 * len(DATA)

    world.intake.ack_timeout = 5
    waiting = asyncio.create_task(upload(other))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    release.set()
    outcome = await waiting
    assert outcome.accepted == 2 and world.intake.buffer.held == 0
    again = await upload(DATA)  # the first upload's retry: landed meanwhile, a duplicate
    assert again.duplicate and world.intake.buffer.held == 0


async def test_one_upload_larger_than_the_buffer_still_fits_alone() -> None:
    buffer = UploadBuffer(100)
    assert await buffer.acquire(1000, timeout=0.01) == 100
    with pytest.raises(Unavailable):
        await buffer.acquire(1, timeout=0.01)
    buffer.release(100)
    assert await buffer.acquire(1, timeout=0.01) == 1


async def test_a_task_reaches_only_its_own_accounts_product(world: World) -> None:
    """A task naming another account's product, or no known product, is dead-lettered."""
    product, _ = await world.registry.register(OPERATOR, REG)
    handle = tasks_handler(world.tasks, world.products)

    def event(task_id: str, account_id: str, product_id: str) -> ConsumedEvent[Any]:
        task = status_pb2.MitigationTask(
            task_id=task_id, account_id=account_id, product_id=product_id, kind=1
        )
        return ConsumedEvent(topics.MITIGATION_TASKS, 0, 0, None, Envelope(), task)

    await handle([event("t1", "acct-a", product.product_id)])
    assert set(world.tasks.items) == {"t1"}
    for bad, reason in (
        (event("t2", "acct-b", product.product_id), "account is not the product's"),
        (event("t3", "acct-a", "prd-nobody"), "unknown product"),
    ):
        with pytest.raises(InvalidEvent, match=reason):
            await handle([bad])
    assert set(world.tasks.items) == {"t1"}


LINES = [b"CEF:0|TM|TDA|1|1|A|5|src=1.1.1.1", b"bad line"]


async def test_a_stream_reports_last_received_after_its_first_batch_then_once_a_minute(
    world: World,
) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    stream = world.intake.stream(product, "syslog-tls:s1", 2)
    await stream.publish(LINES, 100)
    (first,) = world.publisher.uploads
    assert (first.records_accepted, first.records_rejected, first.bytes) == (1, 1, 100)
    assert (first.file_name, first.protocol) == ("syslog-tls:s1", 2)
    assert first.product_id == product.product_id
    world.clock.advance(30)
    await stream.publish(LINES, 50)
    await stream.publish(LINES[:1], 10)
    assert len(world.publisher.uploads) == 1  # throttled
    world.clock.advance(30)
    await stream.publish(LINES[:1], 5)
    second = world.publisher.uploads[1]
    assert (second.records_accepted, second.records_rejected, second.bytes) == (3, 1, 65)
    assert second.finished_at.seconds == int(world.clock.now().timestamp())
    await stream.close()
    assert len(world.publisher.uploads) == 2  # nothing left to report
    await stream.publish(LINES[1:], 7)
    await stream.close()
    assert world.publisher.uploads[2].records_rejected == 1
    assert [e.line for e in world.publisher.rejections] == [2, 4, 7]  # one numbering


async def test_a_stream_batch_kafka_does_not_acknowledge_fails_after_the_ack_timeout(
    world: World,
) -> None:
    """The idempotent producer never fails a send while the broker is down: the session
    must be told, not left waiting."""
    product, _ = await world.registry.register(OPERATOR, REG)
    never = asyncio.Event()

    async def unacknowledged(*args: Any, **kwargs: Any) -> Any:
        await never.wait()

    world.publisher.publish_records = unacknowledged  # type: ignore[method-assign]
    world.intake.ack_timeout = 0.05
    stream = world.intake.stream(product, "syslog-tls:s2", 2)
    with pytest.raises(Unavailable, match="not acknowledged the batch"):
        await asyncio.wait_for(stream.publish(LINES, 10), 5)
    await stream.close()
    assert world.publisher.uploads == []


async def test_a_stream_reports_only_acknowledged_batches(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    stream = world.intake.stream(product, "syslog-tls:s3", 2)
    world.publisher.fail = True
    with pytest.raises(Unavailable):
        await stream.publish(LINES, 10)
    await stream.close()
    assert world.publisher.uploads == []

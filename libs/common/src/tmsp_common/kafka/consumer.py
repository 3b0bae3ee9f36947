"""A consumer runner: decode, validate, apply, then commit.

Auto-commit is off. A batch is committed only after the handler returned, i.e. after its
side effects are stored; a crash before that redelivers the batch, so handlers must tolerate
redelivery (unique event ids, duplicate key counts as success). A record that cannot be
decoded, or that the handler rejects with :class:`InvalidEvent`, goes to the topic's
dead-letter topic with the original topic, partition, offset and the reason in headers.
Any other handler error is retried with backoff; after ``max_consecutive_failures`` the
runner stops with :class:`ConsumerStopped` instead of looping or dead-lettering everything.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from google.protobuf.message import Message

from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.kafka.envelope import EnvelopeError, unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import Topic
from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.logging import get_logger
from tmsp_common.metrics import (
    KAFKA_HANDLER_SECONDS,
    KAFKA_MESSAGES_CONSUMED,
    KAFKA_MESSAGES_DEAD_LETTERED,
)

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

DLQ_REASON = "tmsp-dlq-reason"
DLQ_TOPIC = "tmsp-dlq-original-topic"
DLQ_PARTITION = "tmsp-dlq-original-partition"
DLQ_OFFSET = "tmsp-dlq-original-offset"
DLQ_CONSUMER_GROUP = "tmsp-dlq-consumer-group"


@dataclass
class ConsumedEvent(Generic[M]):
    """One decoded record: where it came from, its envelope and its payload."""

    topic: Topic
    partition: int
    offset: int
    key: bytes | None
    envelope: Envelope
    payload: M
    headers: dict[str, bytes] = field(default_factory=dict)
    raw: bytes = b""


class InvalidEvent(Exception):
    """Raised by a handler for a record that can never be applied; it is dead-lettered."""

    def __init__(self, event: ConsumedEvent[Any], reason: str) -> None:
        super().__init__(reason)
        self.event = event
        self.reason = reason


class ConsumerStopped(RuntimeError):
    """Too many consecutive failures: the consumer stopped rather than loop."""


BatchHandler = Callable[[list[ConsumedEvent[Any]]], Awaitable[None]]


def per_event(handle: Callable[[ConsumedEvent[Any]], Awaitable[None]]) -> BatchHandler:
    """Adapt a one-event handler to the batch interface (events handled in order)."""

    async def _batch(events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            await handle(event)

    return _batch


class _OnRevoked(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:  # aiokafka also calls this, with nothing, before the first assignment
            self._callback()

    def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class ConsumerRunner:
    """Runs one consumer group over registry topics until ``stop`` is set."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[Topic],
        handler: BatchHandler,
        dead_letters: EventProducer,
        topic_prefix: str = "",
        batch_size: int = 500,
        batch_timeout_ms: int = 200,
        max_consecutive_failures: int = 10,
        max_consecutive_dead_letters: int = 1000,
        retry_backoff_s: float = 0.5,
        auto_offset_reset: str = "earliest",
        on_revoked: Callable[[], None] | None = None,
        **extra: Any,
    ) -> None:
        self.group_id = group_id
        self.prefix = topic_prefix
        self.bootstrap = bootstrap
        self._by_name = {t.qualified(topic_prefix): t for t in topics}
        self._handler = handler
        self._dlq = dead_letters
        self.batch_size = batch_size
        self.batch_timeout_ms = batch_timeout_ms
        self.max_consecutive_failures = max_consecutive_failures
        self.max_consecutive_dead_letters = max_consecutive_dead_letters
        self.retry_backoff_s = retry_backoff_s
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=f"tmsp-{dead_letters.service}",
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            isolation_level="read_committed",
            **extra,
        )
        # ``on_revoked``: a handler that caches what it wrote must forget it when its
        # partitions move (another member may write newer state meanwhile)
        self._consumer.subscribe(
            list(self._by_name), listener=_OnRevoked(on_revoked) if on_revoked else None
        )
        self._consecutive_dead_letters = 0
        self.ready = asyncio.Event()
        """Set once the group has partitions assigned (tests wait on it)."""

    async def start(self, timeout_s: float = 15.0) -> None:
        try:
            await asyncio.wait_for(self._consumer.start(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(
                f"cannot reach Kafka at {self.bootstrap} ({exc or type(exc).__name__})"
            ) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit and close."""
        await self.start()
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=self.batch_timeout_ms, max_records=self.batch_size
                )
                if self._consumer.assignment():
                    self.ready.set()
                if not batches:
                    continue
                records = [r for part in batches.values() for r in part]
                await self._process(records, stop)
                await self._commit(records)
        finally:
            await self._consumer.stop()

    async def _process(self, records: list[ConsumerRecord[Any, Any]], stop: asyncio.Event) -> None:
        events: list[ConsumedEvent[Any]] = []
        for record in records:
            event = await self._decode(record)
            if event is not None:
                events.append(event)
        failures = 0
        while events:
            started = time.perf_counter()
            try:
                await self._handler(events)
            except InvalidEvent as bad:
                await self._dead_letter_event(bad.event, bad.reason)
                events = [e for e in events if e is not bad.event]
                continue
            except Exception as exc:  # noqa: BLE001 - retried, then the consumer stops
                failures += 1
                log.warning(
                    "handler failed; retrying batch",
                    group=self.group_id,
                    attempt=failures,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if failures >= self.max_consecutive_failures:
                    raise ConsumerStopped(
                        f"consumer {self.group_id} stopped after {failures} consecutive "
                        f"failures; last: {type(exc).__name__}: {exc}"
                    ) from exc
                if stop.is_set() and failures >= 2:
                    raise
                await asyncio.sleep(min(self.retry_backoff_s * 2 ** min(failures - 1, 16), 30))
                continue
            KAFKA_HANDLER_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
            for name, count in Counter(e.topic.name for e in events).items():
                KAFKA_MESSAGES_CONSUMED.labels(name, self.group_id).inc(count)
            self._consecutive_dead_letters = 0
            return

    async def _decode(self, record: ConsumerRecord[Any, Any]) -> ConsumedEvent[Any] | None:
        topic = self._by_name[record.topic]
        headers = {k: bytes(v) for k, v in (record.headers or ())}
        if topic.message_type is None:
            return ConsumedEvent(
                topic, record.partition, record.offset, record.key, Envelope(), None, headers
            )
        try:
            envelope, payload = unwrap(record.value, topic.message_type)
        except EnvelopeError as exc:
            await self._dead_letter(record, topic, str(exc))
            return None
        return ConsumedEvent(
            topic,
            record.partition,
            record.offset,
            record.key,
            envelope,
            payload,
            headers,
            record.value or b"",
        )

    async def _dead_letter_event(self, event: ConsumedEvent[Any], reason: str) -> None:
        await self._send_dead_letter(
            event.topic, event.partition, event.offset, event.key, event.raw, reason
        )

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], topic: Topic, reason: str
    ) -> None:
        await self._send_dead_letter(
            topic, record.partition, record.offset, record.key, record.value, reason
        )

    async def _send_dead_letter(
        self,
        topic: Topic,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> None:
        dlq = topic.dead_letter
        if dlq is None:
            raise ConsumerStopped(f"{topic.name} has no dead-letter topic; reason: {reason}")
        self._consecutive_dead_letters += 1
        if self._consecutive_dead_letters > self.max_consecutive_dead_letters:
            raise ConsumerStopped(
                f"consumer {self.group_id} stopped: {self._consecutive_dead_letters} "
                f"consecutive dead letters; last reason: {reason}"
            )
        headers = [
            (DLQ_REASON, reason.encode()[:1000]),
            (DLQ_TOPIC, topic.qualified(self.prefix).encode()),
            (DLQ_PARTITION, str(partition).encode()),
            (DLQ_OFFSET, str(offset).encode()),
            (DLQ_CONSUMER_GROUP, self.group_id.encode()),
        ]
        fut = await self._dlq.send_raw(dlq.qualified(self.prefix), value, key=key, headers=headers)
        await fut
        KAFKA_MESSAGES_DEAD_LETTERED.labels(topic.name, reason.split(":")[0][:40]).inc()
        log.warning(
            "dead-lettered",
            topic=topic.name,
            partition=partition,
            offset=offset,
            reason=reason,
        )

    async def _commit(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions away: the new owner re-reads from the last
            # committed offset; handlers are idempotent, so nothing is lost or doubled.
            log.warning("commit failed after rebalance", group=self.group_id, error=str(exc))

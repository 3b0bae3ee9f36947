"""The one way to put events on the bus: ``acks=all``, idempotence on.

:meth:`EventProducer.publish` returns only once the broker acknowledged the write, so a
caller may tell its client "accepted" right after it. For throughput, :meth:`send` enqueues
and returns the acknowledgement future; await all of them before acknowledging anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf.message import Message

from tmsp_common.errors import Unavailable
from tmsp_common.kafka.envelope import wrap
from tmsp_common.kafka.topics import Topic
from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.metrics import KAFKA_MESSAGES_PRODUCED

Headers = Sequence[tuple[str, bytes]]


class EventProducer:
    """Publishes enveloped protobuf events to registry topics under a prefix."""

    def __init__(
        self,
        bootstrap: str,
        *,
        service: str,
        topic_prefix: str = "",
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
        max_batch_size: int = 512 * 1024,
        **extra: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.prefix = topic_prefix
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"tmsp-{service}",
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size,
            **extra,
        )
        self._started = False

    async def start(self, timeout_s: float = 15.0) -> None:
        """Connect; raises :class:`DependencyUnavailable` naming the broker if it cannot."""
        try:
            await asyncio.wait_for(self._producer.start(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._safe_stop()
            reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
            raise DependencyUnavailable(
                f"cannot reach Kafka at {self.bootstrap} ({reason or type(exc).__name__})"
            ) from exc
        self._started = True

    async def _safe_stop(self) -> None:
        with contextlib.suppress(Exception):  # best effort while reporting the real error
            await self._producer.stop()

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def topic_name(self, topic: Topic) -> str:
        name: str = topic.qualified(self.prefix)
        return name

    async def send(
        self,
        topic: Topic,
        payload: Message,
        *,
        key: str,
        account_id: str = "",
        occurred_at: datetime | None = None,
        event_id: str | None = None,
        trace_id: str | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        """Enqueue one event; returns the future the broker's acknowledgement resolves."""
        if topic.message_type is not None and not isinstance(payload, topic.message_type):
            raise TypeError(f"{topic.name} carries {topic.type_name}, not {type(payload)}")
        env = wrap(
            payload,
            producer=self.service,
            account_id=account_id,
            occurred_at=occurred_at,
            event_id=event_id,
            trace_id=trace_id,
        )
        fut: asyncio.Future[Any] = await self._producer.send(
            self.topic_name(topic),
            value=env.SerializeToString(),
            key=key.encode(),
            headers=list(headers or []),
        )
        fut.add_done_callback(lambda f: _count(f, topic.name))
        return fut

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any:
        """Publish one event and wait for the broker's acknowledgement."""
        fut = await self.send(topic, payload, key=key, **kw)
        return await fut

    async def send_raw(
        self,
        topic_name: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        """Enqueue raw bytes (dead letters, internal records) to an already-qualified topic
        name; to ``partition`` if given, else to the one the key hashes to."""
        fut: asyncio.Future[Any] = await self._producer.send(
            topic_name, value=value, key=key, headers=list(headers), partition=partition
        )
        return fut

    async def send_raw_batch(
        self, topic_name: str, values: Sequence[bytes], *, key: bytes
    ) -> list[asyncio.Future[Any]]:
        """Enqueue many raw values sharing one key, in order, packed into as few broker
        batches as fit (several times cheaper per record than :meth:`send_raw`). The
        partition is the one :meth:`send_raw` would pick for ``key``. Returns one
        acknowledgement future per batch; await them all before acknowledging anything."""
        partitions = sorted(await self._producer.partitions_for(topic_name))
        partition = DefaultPartitioner()(key, partitions, partitions)
        sent = await send_in_batches(
            self._producer, topic_name, partition, ((key, value) for value in values)
        )
        for fut, count in sent:
            fut.add_done_callback(functools.partial(_count, topic=topic_name, records=count))
        return [fut for fut, _records in sent]

    async def flush(self) -> None:
        await self._producer.flush()


async def send_in_batches(
    producer: AIOKafkaProducer,
    topic_name: str,
    partition: int,
    records: Iterable[tuple[bytes | None, bytes | None]],
) -> list[tuple[asyncio.Future[Any], int]]:
    """Append ``(key, value)`` records (a None value: a tombstone), in order, to as few
    broker record batches as fit and submit each to ``partition``: one future per batch
    instead of one per record (several times cheaper per record than ``send``). Returns
    (acknowledgement future, records in the batch) per batch; a record larger than a whole
    batch raises ValueError."""
    sent: list[tuple[asyncio.Future[Any], int]] = []
    batch = producer.create_batch()

    async def submit() -> None:
        batch.close()
        fut: asyncio.Future[Any] = await producer.send_batch(batch, topic_name, partition=partition)
        sent.append((fut, batch.record_count()))

    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            await submit()
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds max_batch_size")
    if batch.record_count():
        await submit()
    return sent


def _count(fut: asyncio.Future[Any], topic: str, records: int = 1) -> None:
    if not fut.cancelled() and fut.exception() is None:
        KAFKA_MESSAGES_PRODUCED.labels(topic).inc(records)


class BusPublisher:
    """A publisher for use cases that answer a client: a broker failure becomes
    :class:`~tmsp_common.errors.Unavailable` (the client hears UNAVAILABLE and may retry)
    rather than an internal error."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.prefix: str = getattr(producer, "prefix", "")

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any:
        try:
            return await self._producer.publish(topic, payload, key=key, **kw)
        except KafkaError as exc:
            raise Unavailable(
                f"the event bus did not take it ({type(exc).__name__}); try again"
            ) from exc

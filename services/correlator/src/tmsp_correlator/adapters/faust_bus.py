"""Publishing and dead-lettering through the faust app's own producer.

Sending through faust (rather than a second producer) matters for correctness: faust
flushes its producer before it commits consumer offsets, so an event's incident, hits and
dead letters are on the broker before the event counts as consumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import faust
from google.protobuf.message import Message

from tmsp_common.kafka.consumer import (
    DLQ_CONSUMER_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
)
from tmsp_common.kafka.envelope import wrap
from tmsp_common.kafka.producer import send_in_batches
from tmsp_common.kafka.topics import Topic
from tmsp_common.metrics import KAFKA_MESSAGES_DEAD_LETTERED, KAFKA_MESSAGES_PRODUCED

SERVICE = "correlator"


class FaustBus:
    """Registry topics under a prefix, as raw-bytes faust topics."""

    def __init__(self, app: faust.App, prefix: str) -> None:
        self.app = app
        self.prefix = prefix
        self._topics: dict[str, Any] = {}

    def topic(self, name: str, partitions: int | None = None, *, internal: bool = False) -> Any:
        """The raw-bytes faust topic ``name`` (one object per name); ``internal``: one of
        the app's own topics (hits, detached status changes)."""
        t = self._topics.get(name)
        if t is None:
            t = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=partitions,
                internal=internal,
            )
            self._topics[name] = t
        return t

    async def publish(
        self,
        topic: Topic,
        payload: Message,
        *,
        key: str,
        account_id: str = "",
        occurred_at: datetime | None = None,
    ) -> None:
        env = wrap(payload, producer=SERVICE, account_id=account_id, occurred_at=occurred_at)
        await self.send_raw(topic.qualified(self.prefix), key.encode(), env.SerializeToString())
        KAFKA_MESSAGES_PRODUCED.labels(topic.name).inc()

    async def send_raw(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        """Hand a record to faust's producer (partitioned by key); it is on the broker
        before any offset is committed, since faust flushes its producer first. Cheaper
        than ``topic.send``, which builds several objects per record."""
        await self.app.producer.send(topic, key, value, partition, None, None)

    async def send_records(
        self, topic: str, partition: int, records: Iterable[tuple[bytes, bytes | None]]
    ) -> None:
        """Hand ``(key, value)`` records for one partition to faust's producer as whole
        record batches (:func:`~tmsp_common.kafka.producer.send_in_batches`): one future per
        batch instead of per record, and none of faust's per-record objects (a tenth of the
        worker's time when every window-state write took ``send``). Flushed before any
        commit, like :meth:`send_raw`.

        faust has no public batch API: this takes its aiokafka producer
        (``Producer._ensure_producer``; faust-streaming is pinned in uv.lock)."""
        producer = cast(Any, self.app.producer)._ensure_producer()
        await send_in_batches(producer, topic, partition, records)

    async def dead_letter(
        self,
        source: Topic,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        partition: int | str = "",
        offset: int | str = "",
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        dlq = source.dead_letter
        if dlq is None:
            return
        headers = [
            (DLQ_REASON, reason.encode()[:1000]),
            (DLQ_TOPIC, source.qualified(self.prefix).encode()),
            (DLQ_PARTITION, str(partition).encode()),
            (DLQ_OFFSET, str(offset).encode()),
            (DLQ_CONSUMER_GROUP, self.app.conf.id.encode()),
            *extra_headers,
        ]
        await self.topic(dlq.qualified(self.prefix)).send(key=key, value=value, headers=headers)
        KAFKA_MESSAGES_DEAD_LETTERED.labels(source.name, reason.split(":")[0][:40]).inc()

"""Publishing uploads, snapshots and heartbeats to Kafka.

Uploads are encoded in chunks (in a worker process when configured) and sent with
:meth:`EventProducer.send_raw_batch` (rejections, with their headers, one by one); the sink
keeps at most ``window`` records unacknowledged, so memory stays bounded while the broker
is slow, and raises :class:`Unavailable` when any send fails.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError

from tmsp.events.v1 import products_pb2, status_pb2
from tmsp_common.errors import Unavailable
from tmsp_common.kafka import topics
from tmsp_common.kafka.envelope import from_timestamp, to_timestamp
from tmsp_common.kafka.producer import EventProducer
from tmsp_ingest.adapters.encoding import EncodedChunk, encode_chunk
from tmsp_ingest.domain.forensics import chunk_event_id
from tmsp_ingest.domain.intake import UploadContext
from tmsp_ingest.domain.products import Product
from tmsp_ingest.service_layer.ports import UploadStats


def snapshot(product: Product) -> products_pb2.ProductSnapshot:
    """The product as other services see it: never any credential."""
    msg = products_pb2.ProductSnapshot(
        product_id=product.product_id,
        account_id=product.account_id,
        kind=int(product.kind),  # type: ignore[arg-type]
        name=product.name,
        protocol=int(product.protocol),  # type: ignore[arg-type]
        upload_frequency_seconds=product.upload_frequency_seconds,
        heartbeat_interval_seconds=product.heartbeat_interval_seconds,
        registration_email=product.registration_email,
        upload_bandwidth_bytes_per_second=product.upload_bandwidth,
        download_bandwidth_bytes_per_second=product.download_bandwidth,
        state=int(product.state),  # type: ignore[arg-type]
        server_user_name=product.user_name,
        version=product.version,
    )
    msg.registered_at.CopyFrom(to_timestamp(product.registered_at))
    msg.updated_at.CopyFrom(to_timestamp(product.updated_at))
    return msg


class KafkaPublisher:
    """Implements ProductPublisher, UploadSink, HeartbeatSink and ForensicSink."""

    def __init__(
        self,
        producer: EventProducer,
        *,
        executor: Executor | None = None,
        chunk_lines: int = 4000,
        window: int = 100_000,
        ack_timeout: float = 30.0,
        prefetch: int = 1,
    ) -> None:
        self.producer = producer
        self.executor = executor
        self.chunk_lines = chunk_lines
        self.window = window
        self.ack_timeout = ack_timeout
        self.prefetch = prefetch if executor is not None else 0
        self._detections = producer.topic_name(topics.DETECTIONS)
        self._mitigations = producer.topic_name(topics.MITIGATION_RESULTS)
        self._rejected = producer.topic_name(topics.INGEST_REJECTED)

    async def product_changed(self, product: Product) -> None:
        try:
            await self._acked(
                self.producer.send(
                    topics.PRODUCTS,
                    snapshot(product),
                    key=product.product_id,
                    account_id=product.account_id,
                    event_id=f"{product.product_id}:{product.version}",
                )
            )
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"cannot publish product snapshot: {type(exc).__name__}") from exc

    async def heartbeat(self, event: status_pb2.Heartbeat) -> None:
        try:
            await self._acked(
                self.producer.send(
                    topics.HEARTBEATS, event, key=event.product_id, account_id=event.account_id
                )
            )
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"cannot publish heartbeat: {type(exc).__name__}") from exc

    async def _acked(self, sending: Awaitable[asyncio.Future[Any]]) -> None:
        """Send and wait for the acknowledgement at most ``ack_timeout`` seconds (the
        idempotent producer otherwise retries forever while the broker is down)."""
        async with asyncio.timeout(self.ack_timeout):
            fut = await sending
            await fut

    async def upload_received(self, event: status_pb2.UploadReceived, event_id: str) -> None:
        try:
            await self.producer.publish(
                topics.UPLOADS,
                event,
                key=event.product_id,
                account_id=event.account_id,
                event_id=event_id,
            )
        except KafkaError as exc:
            raise Unavailable(f"cannot publish upload: {type(exc).__name__}") from exc

    async def forensic_chunks(self, chunks: Iterable[status_pb2.ForensicDataChunk]) -> None:
        """Every chunk enqueued, then every acknowledgement awaited (the producer's
        ``max_batch_size`` holds one 256 KiB chunk and its envelope)."""
        pending: list[asyncio.Future[Any]] = []
        try:
            for chunk in chunks:
                pending.append(
                    await self.producer.send(
                        topics.FORENSIC_DATA,
                        chunk,
                        key=chunk.upload_id,
                        account_id=chunk.account_id,
                        event_id=chunk_event_id(chunk.upload_id, chunk.index),
                        occurred_at=from_timestamp(chunk.received_at),
                    )
                )
            await asyncio.gather(*pending)
        except KafkaError as exc:
            _abandon(pending)
            raise Unavailable(
                f"Kafka did not acknowledge the forensic data: {type(exc).__name__}"
            ) from exc

    async def _encode(
        self, lines: Sequence[bytes], first: int, ctx: UploadContext, trace: str
    ) -> EncodedChunk:
        if self.executor is None:
            return encode_chunk(lines, first, ctx, trace, self.producer.service)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor,
            partial(encode_chunk, list(lines), first, ctx, trace, self.producer.service),
        )

    async def publish_records(
        self, lines: Sequence[bytes], ctx: UploadContext, first_line: int = 1
    ) -> UploadStats:
        trace = uuid.uuid4().hex
        key = ctx.product_id.encode()
        stats = UploadStats()
        pending: list[asyncio.Future[Any]] = []
        send = self.producer.send_raw
        batch = self.producer.send_raw_batch
        outstanding = 0
        starts = list(range(0, len(lines), self.chunk_lines))
        ahead: collections.deque[asyncio.Future[EncodedChunk]] = collections.deque()
        try:
            for index in range(len(starts)):
                # Keep ``prefetch`` chunks encoding in the workers while this one is sent.
                while len(ahead) <= self.prefetch and index + len(ahead) < len(starts):
                    at = starts[index + len(ahead)]
                    ahead.append(
                        asyncio.ensure_future(
                            self._encode(
                                lines[at : at + self.chunk_lines], at + first_line, ctx, trace
                            )
                        )
                    )
                chunk = await ahead.popleft()
                if chunk.detections:
                    pending.extend(await batch(self._detections, chunk.detections, key=key))
                if chunk.mitigations:
                    pending.extend(await batch(self._mitigations, chunk.mitigations, key=key))
                for raw, headers in chunk.rejections:
                    pending.append(await send(self._rejected, raw, key=key, headers=headers))
                outstanding += len(chunk.detections) + len(chunk.mitigations)
                outstanding += len(chunk.rejections)
                stats.merge(UploadStats(chunk.accepted, chunk.rejected))
                if outstanding >= self.window:
                    await asyncio.gather(*pending)
                    pending.clear()
                    outstanding = 0
            if pending:
                await asyncio.gather(*pending)
        except KafkaError as exc:
            for encoding in ahead:
                encoding.cancel()
            _abandon(pending)
            raise Unavailable(
                f"Kafka did not acknowledge the upload: {type(exc).__name__}"
            ) from exc
        return stats


def _abandon(pending: list[asyncio.Future[Any]]) -> None:
    """After a failed send: cancel what is still pending, retrieve what failed (so asyncio
    does not log it again)."""
    for fut in pending:
        if fut.done():
            if not fut.cancelled():
                fut.exception()
        else:
            fut.cancel()

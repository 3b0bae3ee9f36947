"""The upload use case shared by the SFTP and HTTPS log servers.

Contract: :meth:`Intake.ingest` returns only after every record of the upload (event or
rejection) is acknowledged by Kafka, "Last Received" is published and the content hash is in
the ledger. If that does not happen within ``ack_timeout`` seconds (Kafka slow or down) it
raises :class:`tmsp_common.errors.Unavailable` and the client retries.

The publication itself is not abandoned on timeout: the idempotent producer keeps
retrying, so the records of the "failed" attempt may still land. Therefore the work of one
upload (product + content hash) runs as one background task; a retry of the same content
*joins* that task instead of publishing a second copy, and a retry after completion finds
the hash in the ledger. Each record lands once. If the task itself fails (the producer gave
up), it is forgotten and the next retry publishes afresh; event ids are deterministic, so
consumers deduplicate anything the failed attempt wrote.

A streaming session (syslog over TLS) has no file to commit: :class:`Stream` publishes its
batches, each bounded by the same ``ack_timeout``, and reports "Last Received" for them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument, Unavailable
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_ingest import metrics
from tmsp_ingest.domain.intake import UploadContext, decompress
from tmsp_ingest.domain.products import Product
from tmsp_ingest.domain.records import Format, InvalidRecord
from tmsp_ingest.service_layer.ports import LedgerEntry, UploadLedger, UploadSink, UploadStats

T = TypeVar("T")
STREAM_REPORT_SECONDS = 60.0
"""A streaming session reports "Last Received" at most this often (and at its end)."""


def upload_received(
    product: Product,
    *,
    protocol: int,
    file_name: str,
    content_sha256: str,
    stats: UploadStats,
    nbytes: int,
    finished_at: datetime,
) -> status_pb2.UploadReceived:
    """The "Last Received" event for records of ``product`` that Kafka acknowledged."""
    event = status_pb2.UploadReceived(
        product_id=product.product_id,
        account_id=product.account_id,
        protocol=protocol,  # type: ignore[arg-type]
        file_name=file_name,
        content_sha256=content_sha256,
        records_accepted=stats.accepted_total,
        records_rejected=stats.rejected_total,
        bytes=nbytes,
    )
    event.finished_at.CopyFrom(to_timestamp(finished_at))
    return event


class UploadBuffer:
    """The bytes of uploads held in memory at once, across every session and protocol.

    A session reserves what it is about to read into memory (an HTTPS body, an SFTP file
    at close, a gzip upload's decompressed size) and waits while the gateway holds
    ``limit`` bytes; after ``timeout`` it gets :class:`Unavailable` and the client retries.
    The publication of an upload keeps its reservation until it ends, also when the client
    stopped waiting, so the bound holds while Kafka is slow or down.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = asyncio.Event()

    async def acquire(self, nbytes: int, timeout: float) -> int:
        """Reserve ``nbytes`` (at most ``limit``, so one upload always fits alone)."""
        nbytes = min(max(0, nbytes), self.limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.held + nbytes > self.limit:
            self._freed.clear()
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                raise Unavailable("gateway busy: too many uploads in memory; retry") from None
        self.held += nbytes
        metrics.BUFFERED_BYTES.set(self.held)
        return nbytes

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        metrics.BUFFERED_BYTES.set(self.held)
        self._freed.set()


class Hold:
    """One upload's share of the :class:`UploadBuffer`; release it exactly once, or use it
    as a context manager (the intake takes it over when it starts the publication)."""

    def __init__(self, buffer: UploadBuffer, timeout: float) -> None:
        self.buffer = buffer
        self.timeout = timeout
        self.nbytes = 0

    async def add(self, nbytes: int) -> None:
        self.nbytes += await self.buffer.acquire(nbytes, self.timeout)

    def release(self) -> None:
        if self.nbytes:
            self.buffer.release(self.nbytes)
            self.nbytes = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()  # a no-op once the publication took it over

    def take_over(self) -> Hold:
        """A hold with this one's bytes; this one is left empty."""
        other = Hold(self.buffer, self.timeout)
        other.nbytes, self.nbytes = self.nbytes, 0
        return other


@dataclass(frozen=True)
class UploadOutcome:
    accepted: int
    rejected: int
    duplicate: bool
    content_sha256: str
    stats: UploadStats


class Intake:
    def __init__(
        self,
        sink: UploadSink,
        ledger: UploadLedger,
        clock: Clock,
        max_upload_bytes: int,
        ack_timeout: float = 30.0,
        max_buffered_bytes: int | None = None,
    ) -> None:
        self.sink = sink
        self.ledger = ledger
        self.clock = clock
        self.max_upload_bytes = max_upload_bytes
        self.ack_timeout = ack_timeout
        self.buffer = UploadBuffer(max_buffered_bytes or 4 * max_upload_bytes)
        self._inflight: dict[tuple[str, str], asyncio.Task[Any]] = {}

    def hold(self) -> Hold:
        """An empty share of the upload buffer, for a session about to read an upload."""
        return Hold(self.buffer, self.ack_timeout)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def drain(self, timeout: float) -> None:
        """On shutdown: let publications already under way finish (at most ``timeout``)."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def ingest(
        self,
        product: Product,
        file_name: str,
        data: bytes,
        *,
        protocol: int,
        forced_format: Format | None = None,
        hold: Hold | None = None,
    ) -> UploadOutcome:
        """Raises UploadTooLarge, InvalidArgument (bad gzip) or Unavailable (bus down, or
        the upload buffer full). ``hold`` is the caller's reservation for ``data``; the
        publication takes it over, otherwise the caller releases it (a hold made here is
        released here)."""
        if hold is None:
            with self.hold() as own:
                return await self.ingest(
                    product,
                    file_name,
                    data,
                    protocol=protocol,
                    forced_format=forced_format,
                    hold=own,
                )
        sha = hashlib.sha256(data).hexdigest()
        seen = await self.ledger.find(product.product_id, sha)
        if seen is not None:
            return UploadOutcome(seen.accepted, seen.rejected, True, sha, UploadStats())
        key = (product.product_id, sha)
        plain = b""
        if not self.publishing(key):
            try:
                plain = decompress(data, self.max_upload_bytes)
            except InvalidRecord as exc:
                raise InvalidArgument("file", exc.reason) from None
            await hold.add(len(plain))  # the lines split from it
        return await self.publish_once(  # joins a retry that started it meanwhile
            key,
            hold,
            lambda: self._publish(product, file_name, data, plain, sha, protocol, forced_format),
            "the upload",
        )

    def publishing(self, key: tuple[str, str]) -> bool:
        """Whether the publication named ``key`` is under way (a retry joins it)."""
        return key in self._inflight

    async def publish_once(
        self,
        key: tuple[str, str],
        hold: Hold,
        publication: Callable[[], Coroutine[Any, Any, T]],
        what: str,
    ) -> T:
        """Run ``publication`` as the one background task for ``key`` (a retry while it
        runs joins it instead of publishing a second copy) and wait for it at most
        ``ack_timeout`` seconds (:class:`Unavailable` after that; the task goes on). The
        task takes ``hold`` over and releases it when it ends."""
        task: asyncio.Task[T] | None = self._inflight.get(key)
        if task is None:
            owned = hold.take_over()
            task = asyncio.create_task(publication())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
            task.add_done_callback(lambda _: owned.release())
        return await self.acknowledged(asyncio.shield(task), what)

    async def acknowledged(self, work: Awaitable[T], what: str) -> T:
        """``work``'s result if it ends within ``ack_timeout`` seconds, else
        :class:`Unavailable` (the idempotent producer never fails a send by itself while the
        broker is down)."""
        try:
            async with asyncio.timeout(self.ack_timeout):
                return await work
        except TimeoutError:
            raise Unavailable(
                f"Kafka has not acknowledged {what} within {self.ack_timeout:g}s"
            ) from None

    def stream(self, product: Product, session: str, protocol: int) -> Stream:
        """The intake of one streaming session named ``session``."""
        return Stream(self, product, session, protocol)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure was already reported to the waiting client

    async def _publish(
        self,
        product: Product,
        file_name: str,
        data: bytes,
        plain: bytes,
        sha: str,
        protocol: int,
        forced_format: Format | None,
    ) -> UploadOutcome:
        now: datetime = self.clock.now()
        ctx = UploadContext(
            product_id=product.product_id,
            account_id=product.account_id,
            product_kind=int(product.kind),
            file_name=file_name,
            received_at=now.timestamp(),
            default_year=now.year,
            forced_format=forced_format,
        )
        stats = await self.sink.publish_records(plain.split(b"\n"), ctx)
        event = upload_received(
            product,
            protocol=protocol,
            file_name=file_name,
            content_sha256=sha,
            stats=stats,
            nbytes=len(data),
            finished_at=self.clock.now(),
        )
        await self.sink.upload_received(event, f"{product.product_id}:{sha}")
        await self.ledger.record(
            LedgerEntry(
                product.product_id, sha, file_name, stats.accepted_total, stats.rejected_total
            )
        )
        return UploadOutcome(stats.accepted_total, stats.rejected_total, False, sha, stats)


class Stream:
    """One streaming session's intake: batches of lines, and "Last Received" for them.

    :meth:`publish` returns once Kafka acknowledged every record of the batch, or raises
    :class:`Unavailable` after ``ack_timeout`` seconds. An ``UploadReceived`` for the
    acknowledged records (``file_name`` = the session, no content hash) follows the first
    batch, then at most every ``report_every`` seconds; :meth:`close` reports the rest.
    """

    def __init__(
        self,
        intake: Intake,
        product: Product,
        session: str,
        protocol: int,
        report_every: float = STREAM_REPORT_SECONDS,
    ) -> None:
        self.intake = intake
        self.product = product
        self.session = session
        self.protocol = protocol
        self.report_every = report_every
        self._next_line = 1
        self._unreported: UploadStats | None = None
        self._unreported_bytes = 0
        self._reported_at: float | None = None
        self._bus_failed = False

    async def publish(self, lines: Sequence[bytes], nbytes: int) -> UploadStats:
        """Publish ``lines`` (``nbytes`` read from the client for them); raises Unavailable."""
        now = self.intake.clock.now()
        ctx = UploadContext(
            self.product.product_id,
            self.product.account_id,
            int(self.product.kind),
            self.session,
            now.timestamp(),
            now.year,
        )
        try:
            stats = await self.intake.acknowledged(
                self.intake.sink.publish_records(lines, ctx, first_line=self._next_line),
                "the batch",
            )
        except Unavailable:
            self._bus_failed = True
            raise
        self._next_line += len(lines)
        if self._unreported is None:
            self._unreported = UploadStats()
        self._unreported.merge(stats)
        self._unreported_bytes += nbytes
        due = self._reported_at is None or (
            self.intake.clock.now().timestamp() - self._reported_at >= self.report_every
        )
        if due:
            await self._report()
        return stats

    async def close(self) -> None:
        """At the session's end: report what is unreported. Nothing when the bus just
        failed (the report would wait ``ack_timeout`` again); raises Unavailable."""
        if self._unreported is not None and not self._bus_failed:
            await self._report()

    async def _report(self) -> None:
        assert self._unreported is not None  # noqa: S101 - publish() set it
        finished = self.intake.clock.now()
        event = upload_received(
            self.product,
            protocol=self.protocol,
            file_name=self.session,
            content_sha256="",
            stats=self._unreported,
            nbytes=self._unreported_bytes,
            finished_at=finished,
        )
        event_id = f"{self.product.product_id}:{self.session}:{self._next_line - 1}"
        try:
            await self.intake.acknowledged(
                self.intake.sink.upload_received(event, event_id), "Last Received"
            )
        except Unavailable:
            self._bus_failed = True
            raise
        self._unreported, self._unreported_bytes = None, 0
        self._reported_at = finished.timestamp()

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
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument, Unavailable
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_ingest.domain.intake import UploadContext, decompress
from tmsp_ingest.domain.products import Product
from tmsp_ingest.domain.records import Format, InvalidRecord
from tmsp_ingest.service_layer.ports import LedgerEntry, UploadLedger, UploadSink, UploadStats


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
    ) -> None:
        self.sink = sink
        self.ledger = ledger
        self.clock = clock
        self.max_upload_bytes = max_upload_bytes
        self.ack_timeout = ack_timeout
        self._inflight: dict[tuple[str, str], asyncio.Task[UploadOutcome]] = {}

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
    ) -> UploadOutcome:
        """Raises UploadTooLarge, InvalidArgument (bad gzip) or Unavailable (bus down)."""
        sha = hashlib.sha256(data).hexdigest()
        seen = await self.ledger.find(product.product_id, sha)
        if seen is not None:
            return UploadOutcome(seen.accepted, seen.rejected, True, sha, UploadStats())
        try:
            plain = decompress(data, self.max_upload_bytes)
        except InvalidRecord as exc:
            raise InvalidArgument("file", exc.reason) from None
        key = (product.product_id, sha)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(
                self._publish(product, file_name, data, plain, sha, protocol, forced_format)
            )
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.ack_timeout)
        except TimeoutError:
            raise Unavailable(
                f"Kafka has not acknowledged the upload within {self.ack_timeout:g}s"
            ) from None

    def _forget(self, key: tuple[str, str], task: asyncio.Task[UploadOutcome]) -> None:
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
        event = status_pb2.UploadReceived(
            product_id=product.product_id,
            account_id=product.account_id,
            protocol=protocol,  # type: ignore[arg-type]
            file_name=file_name,
            content_sha256=sha,
            records_accepted=stats.accepted_total,
            records_rejected=stats.rejected_total,
            bytes=len(data),
        )
        event.finished_at.CopyFrom(to_timestamp(self.clock.now()))
        await self.sink.upload_received(event, f"{product.product_id}:{sha}")
        await self.ledger.record(
            LedgerEntry(
                product.product_id, sha, file_name, stats.accepted_total, stats.rejected_total
            )
        )
        return UploadOutcome(stats.accepted_total, stats.rejected_total, False, sha, stats)

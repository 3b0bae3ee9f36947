"""The upload use case shared by the SFTP and HTTPS log servers.

Contract: :meth:`Intake.ingest` returns only after every record of the upload (event or
rejection) is acknowledged by Kafka, "Last Received" is published and the content hash is in
the ledger. If the bus fails it raises :class:`tmsp_common.errors.Unavailable` and nothing
is recorded, so the client's retry publishes again; event ids are deterministic, so the
consumers deduplicate what the failed attempt managed to write. A retry after success finds
the hash in the ledger and publishes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument
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
        self, sink: UploadSink, ledger: UploadLedger, clock: Clock, max_upload_bytes: int
    ) -> None:
        self.sink = sink
        self.ledger = ledger
        self.clock = clock
        self.max_upload_bytes = max_upload_bytes

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

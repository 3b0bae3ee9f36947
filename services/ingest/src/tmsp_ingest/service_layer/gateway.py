"""What the log and status servers share: authentication, intake, bandwidth, metrics."""

from __future__ import annotations

import asyncio
import time

from tmsp_common.errors import DomainError
from tmsp_common.forensics import ForensicFile
from tmsp_common.logging import get_logger
from tmsp_ingest import metrics
from tmsp_ingest.domain.bandwidth import TokenBucket
from tmsp_ingest.domain.intake import UploadTooLarge
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import Product
from tmsp_ingest.domain.records import Format
from tmsp_ingest.service_layer.authenticate import ProductAuthenticator
from tmsp_ingest.service_layer.forensics import ForensicIntake, PatternCatalogue
from tmsp_ingest.service_layer.intake import Hold, Intake, UploadOutcome
from tmsp_ingest.service_layer.status import StatusService

log = get_logger(__name__)


class Bandwidth:
    """One upload and one download bucket per product, shared by every protocol."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _bucket(self, product: Product, direction: str) -> TokenBucket:
        rate = product.upload_bandwidth if direction == "up" else product.download_bandwidth
        key = (product.product_id, direction)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = TokenBucket(rate, now=time.monotonic())
            self._buckets[key] = bucket
        return bucket

    async def upload(self, product: Product, nbytes: int) -> None:
        """Wait as long as the product's upload rate requires for ``nbytes``."""
        if product.upload_bandwidth <= 0:
            return
        wait = self._bucket(product, "up").take(nbytes, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    async def download(self, product: Product, nbytes: int) -> None:
        if product.download_bandwidth <= 0:
            return
        wait = self._bucket(product, "down").take(nbytes, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


class Gateway:
    def __init__(
        self,
        authenticator: ProductAuthenticator,
        intake: Intake,
        status: StatusService,
        bandwidth: Bandwidth,
        max_upload_bytes: int,
        forensics: ForensicIntake,
        patterns: PatternCatalogue,
    ) -> None:
        self.auth = authenticator
        self.intake = intake
        self.status = status
        self.bandwidth = bandwidth
        self.max_upload_bytes = max_upload_bytes
        self.forensics = forensics
        self.patterns = patterns

    async def ingest(
        self,
        product: Product,
        file_name: str,
        data: bytes,
        *,
        protocol: int,
        protocol_label: str,
        forced_format: Format | None = None,
        hold: Hold | None = None,
    ) -> UploadOutcome:
        """Intake plus metrics; exceptions pass through. The caller releases ``hold``
        afterwards (a no-op when the publication took it over)."""
        started = time.perf_counter()
        metrics.UPLOAD_BYTES.labels(protocol_label).inc(len(data))
        try:
            outcome = await self.intake.ingest(
                product,
                file_name,
                data,
                protocol=protocol,
                forced_format=forced_format,
                hold=hold,
            )
        except Exception:
            metrics.UPLOADS.labels(protocol_label, "failed").inc()
            raise
        metrics.UPLOAD_SECONDS.labels(protocol_label).observe(time.perf_counter() - started)
        metrics.UPLOADS.labels(protocol_label, "duplicate" if outcome.duplicate else "ok").inc()
        for label, count in outcome.stats.accepted.items():
            metrics.RECORDS_ACCEPTED.labels(label, protocol_label).inc(count)
        for label, count in outcome.stats.rejected.items():
            metrics.RECORDS_REJECTED.labels(label, protocol_label).inc(count)
        return outcome

    async def forensic_upload(
        self,
        product: Product,
        task_id: str,
        file_name: str,
        data: bytes,
        *,
        protocol: int,
        protocol_label: str,
        hold: Hold,
    ) -> ForensicFile:
        """:meth:`ForensicIntake.upload` plus metrics and a log line (never the content);
        exceptions pass through."""
        try:
            file = await self.forensics.upload(
                product, task_id, file_name, data, protocol=protocol, hold=hold
            )
        except (DomainError, UploadTooLarge) as exc:
            metrics.FORENSIC_UPLOADS.labels(protocol_label, "failed").inc()
            log.warning(
                "forensic data not accepted",
                protocol=protocol_label,
                product_id=product.product_id,
                task_id=task_id[:64],
                reason=str(exc),
            )
            raise
        metrics.FORENSIC_UPLOADS.labels(protocol_label, "ok").inc()
        metrics.FORENSIC_BYTES.labels(protocol_label).inc(file.size)
        metrics.FORENSIC_CHUNKS.labels(protocol_label).inc(file.count)
        log.info(
            "forensic data received",
            protocol=protocol_label,
            product_id=product.product_id,
            task_id=task_id,
            upload_id=file.upload_id,
            file=file.file_name,
            bytes=file.size,
            chunks=file.count,
            content_sha256=file.content_sha256,
        )
        return file

    async def pattern(self, product: Product, name: str, *, protocol_label: str) -> CleanupPattern:
        """:meth:`PatternCatalogue.download` plus metrics; exceptions pass through."""
        try:
            pattern = await self.patterns.download(product, name)
        except DomainError as exc:
            metrics.PATTERN_DOWNLOADS.labels(protocol_label, type(exc).__name__).inc()
            raise
        metrics.PATTERN_DOWNLOADS.labels(protocol_label, "ok").inc()
        return pattern

"""What the log and status servers share: authentication, intake, bandwidth, metrics."""

from __future__ import annotations

import asyncio
import time

from tmsp_ingest import metrics
from tmsp_ingest.domain.bandwidth import TokenBucket
from tmsp_ingest.domain.products import Product
from tmsp_ingest.domain.records import Format
from tmsp_ingest.service_layer.authenticate import ProductAuthenticator
from tmsp_ingest.service_layer.intake import Hold, Intake, UploadOutcome
from tmsp_ingest.service_layer.status import StatusService


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
    ) -> None:
        self.auth = authenticator
        self.intake = intake
        self.status = status
        self.bandwidth = bandwidth
        self.max_upload_bytes = max_upload_bytes

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

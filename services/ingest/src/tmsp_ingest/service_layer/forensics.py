"""Forensic data uploads and cleanup pattern downloads: the use cases the SFTP and HTTPS
log servers share for threat mitigation tasks.

Contract of :meth:`ForensicIntake.upload`: it returns only after Kafka acknowledged every
chunk of the file; within ``ack_timeout`` seconds, else :class:`Unavailable` and the client
retries (the publication goes on in the background and a retry of the same file joins it,
as log uploads do: :meth:`Intake.publish_once`). A retry after completion publishes the
same upload id and event ids again, which consumers deduplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument
from tmsp_common.forensics import ForensicFile
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_ingest.domain import forensics, patterns
from tmsp_ingest.domain.intake import UploadTooLarge
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import Product
from tmsp_ingest.service_layer.intake import Hold, Intake
from tmsp_ingest.service_layer.ports import ForensicSink, PatternRepository, TaskRepository


def chunk_events(
    file: ForensicFile, data: bytes, *, protocol: int, received_at: datetime
) -> Iterator[status_pb2.ForensicDataChunk]:
    """The file's chunks as events, in order, each repeating the file's metadata."""
    for index, piece in enumerate(forensics.chunks(data)):
        event = status_pb2.ForensicDataChunk(
            upload_id=file.upload_id,
            task_id=file.task_id,
            account_id=file.account_id,
            product_id=file.product_id,
            file_name=file.file_name,
            content_sha256=file.content_sha256,
            size=file.size,
            index=index,
            count=file.count,
            data=piece,
            protocol=protocol,  # type: ignore[arg-type]
        )
        event.received_at.CopyFrom(to_timestamp(received_at))
        yield event


class ForensicIntake:
    def __init__(
        self,
        sink: ForensicSink,
        tasks: TaskRepository,
        intake: Intake,
        clock: Clock,
        max_bytes: int,
    ) -> None:
        self.sink = sink
        self.tasks = tasks
        self.intake = intake
        self.clock = clock
        self.max_bytes = max_bytes

    async def accepts(self, product: Product, task_id: str, file_name: str) -> None:
        """Returns when ``product`` may upload ``file_name`` for ``task_id`` (the servers
        ask before reading the file); raises InvalidArgument (file name), NotFound (no such
        task of this product), FailedPrecondition (not a forensic data request)."""
        forensics.check_file_name(file_name)
        task = await self.tasks.get(task_id) if task_id else None
        forensics.check_task(
            task.product_id if task is not None else None,
            task.kind if task is not None else 0,
            product.product_id,
        )

    async def upload(
        self,
        product: Product,
        task_id: str,
        file_name: str,
        data: bytes,
        *,
        protocol: int,
        hold: Hold,
    ) -> ForensicFile:
        """Publish ``data`` as the forensic data ``file_name`` for ``task_id``; raises what
        :meth:`accepts` raises, InvalidArgument (empty), UploadTooLarge, Unavailable.
        ``hold`` holds ``data``; the publication takes it over (the caller releases it)."""
        await self.accepts(product, task_id, file_name)
        if not data:
            raise InvalidArgument("file", "empty upload")
        if len(data) > self.max_bytes:
            raise UploadTooLarge(f"forensic data larger than {self.max_bytes} bytes")
        file = forensics.forensic_file(
            task_id, product.account_id, product.product_id, file_name, data
        )
        key = ("forensic", file.upload_id)
        if not self.intake.publishing(key):
            await hold.add(len(data))  # the chunks' copy on its way to the broker
        events = chunk_events(file, data, protocol=protocol, received_at=self.clock.now())

        async def publish() -> ForensicFile:
            await self.sink.forensic_chunks(events)
            return file

        return await self.intake.publish_once(key, hold, publish, "the forensic data")


@dataclass(frozen=True)
class PatternCatalogue:
    """The gateway's copy of the accounts' cleanup pattern catalogues."""

    store: PatternRepository

    async def apply(self, pattern: CleanupPattern) -> bool:
        """Store a pattern from the bus unless a newer version is stored."""
        return await self.store.put(pattern)

    async def download(self, product: Product, name: str) -> CleanupPattern:
        """The pattern ``product`` may download; InvalidArgument (bad name),
        PermissionDenied (not a Threat Mitigator), NotFound."""
        patterns.check_name(name)
        patterns.check_tmi(product)
        stored = await self.store.get(product.account_id, name)
        return patterns.downloadable(product, name, stored)

    async def listing(self, product: Product) -> list[CleanupPattern]:
        """The patterns ``product`` may download (no content); PermissionDenied."""
        patterns.check_tmi(product)
        return await self.store.names(product.account_id)

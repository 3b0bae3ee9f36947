"""Forensic data (seed: "send forensic data to Trend Micro"): the files products send in
answer to a forensic data request arrive from the log server in chunks; they are stored
once each, checked against the SHA-256 and size the product gave when the last one is
there, listed to the account and downloaded by the provider's operators."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.forensics import ForensicFile
from tmsp_common.logging import get_logger
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.adapters.mongo_forensics import ForensicStore
from tmsp_reporter.domain.forensics import (
    ForensicFileRow,
    InvalidChunk,
    all_received,
    check_agrees,
    check_chunk,
    verified,
)

log = get_logger(__name__)


class ForensicData:
    def __init__(self, store: ForensicStore, read: ReadModel, clock: Clock) -> None:
        self.store = store
        self.read = read
        self.clock = clock
        # the account's files (optionally one task's) newest first, the complete ones per
        # (product, task), the purge by received time: straight from the store
        self.list_files = store.list_files
        self.complete_for_tasks = store.complete_for_tasks
        self.purge = store.purge

    async def receive(
        self,
        file: ForensicFile,
        index: int,
        data: bytes,
        *,
        protocol: int,
        received_at: datetime,
    ) -> None:
        """Store one chunk; the last one missing completes (or condemns) the file.

        Idempotent: a replayed chunk, or one of a file already complete or corrupt, writes
        nothing. Raises InvalidChunk for a chunk that can never be stored (bad metadata,
        metadata other than the upload's earlier chunks, a product of another account)."""
        check_chunk(file, index, len(data))
        product = await self.read.product(file.product_id)
        if product is not None and product.account_id != file.account_id:
            raise InvalidChunk("invalid: the product is not of the account")
        stored = await self.store.upload(file.upload_id)
        if stored is None:
            await self.store.create(file, protocol, received_at)
            received: frozenset[int] = frozenset()
        else:
            check_agrees(stored.file, file)
            if stored.complete or stored.corrupt:
                return
            received = stored.received
        if index not in received:
            received = await self.store.add_chunk(file.upload_id, index, data)
        if all_received(received, file.count):
            await self._verify(file)

    async def _verify(self, file: ForensicFile) -> None:
        digest = hashlib.sha256()
        size = 0
        async for piece in self.store.content(file.upload_id, file.count):
            digest.update(piece)
            size += len(piece)
        ok = verified(file, digest.hexdigest(), size)
        await self.store.finish(file.upload_id, complete=ok, at=self.clock.now())
        context = {
            "upload_id": file.upload_id,
            "account_id": file.account_id,
            "product_id": file.product_id,
            "task_id": file.task_id,
        }
        if ok:
            log.info("forensic data complete", size=size, **context)
        else:
            log.warning(
                "forensic data corrupt: its content does not match the SHA-256 or size sent",
                expected_size=file.size,
                size=size,
                **context,
            )

    async def open_download(
        self, account_id: str, upload_id: str
    ) -> tuple[ForensicFileRow, AsyncIterator[bytes]]:
        """The file's description and its chunks in order. NotFound for an upload not of
        ``account_id``; FailedPrecondition until it is complete (or when it is corrupt)."""
        if not upload_id:
            raise InvalidArgument("upload_id", "required")
        row = await self.store.get(account_id, upload_id)
        if row is None:
            raise NotFound("forensic data not found")
        if not row.complete:
            raise FailedPrecondition(
                "the forensic data is not complete: chunks are missing or its content does "
                "not match its SHA-256"
            )
        return row, self.store.content(upload_id, row.file.count)

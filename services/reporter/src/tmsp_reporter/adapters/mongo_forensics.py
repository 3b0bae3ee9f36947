"""Forensic data files in the reporter's database: ``forensic_uploads`` (one document per
upload id: the file's metadata, the chunk indexes stored, complete or corrupt) and
``forensic_chunks`` (``<upload_id>:<index>``, at most 256 KiB of data each).

Chunks are only inserted (a duplicate key is a replay) and read by ``_id``; on FerretDB every
update or delete scans its collection (docs/services/correlator.md), so the large chunks
collection is deleted from once per purge pass or corrupt file, never per chunk. All chunks
of an upload come through one partition (key: upload_id), so its document has one writer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from bson import Binary
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.forensics import ForensicFile
from tmsp_common.mongo import Document, insert_idempotent
from tmsp_reporter.domain.forensics import ForensicFileRow

_FILE_FIELDS = (
    "task_id",
    "account_id",
    "product_id",
    "file_name",
    "content_sha256",
    "size",
    "count",
)


def _file(d: Document) -> ForensicFile:
    return ForensicFile(
        upload_id=d["_id"],
        task_id=d["task_id"],
        account_id=d["account_id"],
        product_id=d["product_id"],
        file_name=d["file_name"],
        content_sha256=d["content_sha256"],
        size=int(d["size"]),
        count=int(d["count"]),
    )


def _row(d: Document) -> ForensicFileRow:
    return ForensicFileRow(_file(d), d["received_at"], bool(d.get("complete", False)))


def _chunk_id(upload_id: str, index: int) -> str:
    return f"{upload_id}:{index:05d}"


class StoredUpload:
    """What the consumer needs of a stored upload."""

    def __init__(self, d: Document) -> None:
        self.file = _file(d)
        self.received = frozenset(int(i) for i in d.get("received", ()))
        self.complete = bool(d.get("complete", False))
        self.corrupt = bool(d.get("corrupt", False))


class ForensicStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.uploads = db["forensic_uploads"]
        self.chunks = db["forensic_chunks"]

    async def upload(self, upload_id: str) -> StoredUpload | None:
        d = await self.uploads.find_one({"_id": upload_id})
        return StoredUpload(d) if d else None

    async def create(self, file: ForensicFile, protocol: int, received_at: datetime) -> None:
        doc: Document = {f: getattr(file, f) for f in _FILE_FIELDS}
        doc.update(
            _id=file.upload_id,
            protocol=protocol,
            received_at=received_at,
            received=[],
            complete=False,
            corrupt=False,
        )
        await insert_idempotent(self.uploads, doc)

    async def add_chunk(self, upload_id: str, index: int, data: bytes) -> frozenset[int]:
        """Store one chunk (a replayed one is already there) and return the indexes stored."""
        await insert_idempotent(
            self.chunks,
            {"_id": _chunk_id(upload_id, index), "upload_id": upload_id, "data": Binary(data)},
        )
        d = await self.uploads.find_one_and_update(
            {"_id": upload_id},
            {"$addToSet": {"received": index}},
            return_document=ReturnDocument.AFTER,
        )
        return frozenset(int(i) for i in (d or {}).get("received", ()))

    async def content(self, upload_id: str, count: int) -> AsyncIterator[bytes]:
        """The file's chunks in order; a missing one ends the iteration early."""
        for index in range(count):
            d = await self.chunks.find_one({"_id": _chunk_id(upload_id, index)})
            if d is None:
                return
            yield bytes(d["data"])

    async def finish(self, upload_id: str, *, complete: bool, at: datetime) -> None:
        """Mark the file complete, or corrupt (then its chunks are removed)."""
        if not complete:
            await self.chunks.delete_many({"upload_id": upload_id})
        await self.uploads.update_one(
            {"_id": upload_id},
            {"$set": {"complete": complete, "corrupt": not complete, "verified_at": at}},
        )

    async def get(self, account_id: str, upload_id: str) -> ForensicFileRow | None:
        d = await self.uploads.find_one({"_id": upload_id}, {"received": 0})
        return _row(d) if d and d["account_id"] == account_id else None

    async def list_files(
        self,
        account_id: str,
        task_id: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ForensicFileRow]:
        filt: Document = {"account_id": account_id}
        if task_id:
            filt["task_id"] = task_id
        if after is not None:
            at, key = after
            filt["$or"] = [{"received_at": {"$lt": at}}, {"received_at": at, "_id": {"$lt": key}}]
        cursor = (
            self.uploads.find(filt, {"received": 0})
            .sort([("received_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return [_row(d) async for d in cursor]

    async def complete_for_tasks(
        self, account_id: str, task_ids: Sequence[str]
    ) -> dict[tuple[str, str], list[str]]:
        """Complete uploads per (product id, task id), oldest first."""
        out: dict[tuple[str, str], list[str]] = {}
        if not task_ids:
            return out
        cursor = self.uploads.find(
            {"account_id": account_id, "task_id": {"$in": list(task_ids)}, "complete": True},
            {"product_id": 1, "task_id": 1, "received_at": 1},
        ).sort([("received_at", 1), ("_id", 1)])
        async for d in cursor:
            out.setdefault((d["product_id"], d["task_id"]), []).append(d["_id"])
        return out

    async def purge(self, cutoff: datetime) -> int:
        """Remove uploads received before ``cutoff`` with their chunks (chunks first: a
        pass that stops half-way leaves the upload for the next one)."""
        cursor = self.uploads.find({"received_at": {"$lt": cutoff}}, {"_id": 1})
        ids = [d["_id"] async for d in cursor]
        if ids:
            await self.chunks.delete_many({"upload_id": {"$in": ids}})
            await self.uploads.delete_many({"_id": {"$in": ids}})
        return len(ids)

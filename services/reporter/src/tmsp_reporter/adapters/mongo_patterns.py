"""The custom cleanup pattern catalogue in the reporter's database (``cleanup_patterns``).

One document per account and name (``_id`` = ``account_id/name``, the topic key) with its
content; a removal keeps the document as a tombstone (deleted, no content) so the next put
continues its version. A change is a compare-and-set on the stored version: a first put
inserts (a duplicate key means someone else did), later ones replace ``{_id, version}``.
"""

from __future__ import annotations

from bson import Binary
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tmsp_common.errors import FailedPrecondition
from tmsp_common.mongo import Document
from tmsp_reporter.domain.patterns import CleanupPatternEntry


def _doc(entry: CleanupPatternEntry, content: bytes) -> Document:
    return {
        "_id": entry.key,
        "account_id": entry.account_id,
        "name": entry.name,
        "description": entry.description,
        "content": Binary(content),
        "content_sha256": entry.content_sha256,
        "size": entry.size,
        "version": entry.version,
        "updated_at": entry.updated_at,
        "updated_by_user_id": entry.updated_by_user_id,
        "deleted": entry.deleted,
        "published": entry.published,
    }


def _entry(d: Document) -> CleanupPatternEntry:
    return CleanupPatternEntry(
        account_id=d["account_id"],
        name=d["name"],
        description=d.get("description", ""),
        content_sha256=d.get("content_sha256", ""),
        size=int(d.get("size", 0)),
        version=int(d["version"]),
        updated_at=d["updated_at"],
        updated_by_user_id=d.get("updated_by_user_id", ""),
        deleted=bool(d.get("deleted", False)),
        published=bool(d.get("published", False)),
    )


class PatternStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.patterns = db["cleanup_patterns"]

    async def get(self, account_id: str, name: str) -> tuple[CleanupPatternEntry, bytes] | None:
        """The stored entry (also a removed one) and its content."""
        d = await self.patterns.find_one({"_id": f"{account_id}/{name}"})
        return (_entry(d), bytes(d.get("content", b""))) if d else None

    async def save(self, entry: CleanupPatternEntry, content: bytes, previous: int) -> None:
        """Store ``entry`` if the stored version is still ``previous`` (0: none stored);
        FailedPrecondition when another change came first."""
        doc = _doc(entry, content)
        if previous == 0:
            try:
                await self.patterns.insert_one(doc)
            except DuplicateKeyError:
                raise FailedPrecondition("the cleanup pattern changed meanwhile; retry") from None
            return
        doc.pop("_id")
        result = await self.patterns.replace_one({"_id": entry.key, "version": previous}, doc)
        if result.matched_count != 1:
            raise FailedPrecondition("the cleanup pattern changed meanwhile; retry")

    async def mark_published(self, entry: CleanupPatternEntry) -> None:
        await self.patterns.update_one(
            {"_id": entry.key, "version": entry.version}, {"$set": {"published": True}}
        )

    async def unpublished(self) -> list[tuple[CleanupPatternEntry, bytes]]:
        cursor = self.patterns.find({"published": False})
        return [(_entry(d), bytes(d.get("content", b""))) async for d in cursor]

    async def list(self, account_id: str) -> list[CleanupPatternEntry]:
        """The account's entries that are not removed, by name (without content)."""
        cursor = self.patterns.find(
            {"account_id": account_id, "deleted": {"$ne": True}}, {"content": 0}
        ).sort("name", 1)
        return [_entry(d) async for d in cursor]

"""MongoDB repositories of the gateway's own database.

Single-document atomic operations only (FerretDB has no multi-document transactions):
products are replaced with a version compare-and-set, accounts and cleanup patterns are
upserted only when not older than the stored version, the ledger and tasks use unique ids so
redelivery is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tmsp.events.v1 import status_pb2
from tmsp_common.mongo import Document, insert_idempotent
from tmsp_ingest.domain.patterns import CleanupPattern, pattern_key
from tmsp_ingest.domain.products import AccountView, Kind, Product, Protocol_, State
from tmsp_ingest.service_layer.ports import LedgerEntry, ProductExists, VersionConflict

INDEXES: dict[str, list[IndexModel]] = {
    "products": [
        IndexModel([("user_name", ASCENDING)], unique=True, name="user_name_unique"),
        IndexModel([("account_id", ASCENDING)], name="by_account"),
    ],
    "accounts": [],
    "uploads": [IndexModel([("product_id", ASCENDING)], name="by_product")],
    "tasks": [IndexModel([("product_id", ASCENDING), ("acknowledged", ASCENDING)], name="pending")],
    "cleanup_patterns": [
        IndexModel([("account_id", ASCENDING), ("name", ASCENDING)], name="by_account")
    ],
}


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Create the gateway's indexes, one ``createIndexes`` per index: FerretDB 1.24 panics
    (drops the connection) when one call re-creates several existing indexes."""
    for collection, models in INDEXES.items():
        for model in models:
            await db[collection].create_indexes([model])


def _utc(value: Any) -> datetime:
    when: datetime = value
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _store_unless_newer(
    coll: AsyncCollection[Document], _id: str, version: int, fields: Document
) -> bool:
    """Set ``fields`` (with ``version``) on document ``_id`` unless it holds a newer version;
    True when stored. One atomic upsert: when the filter misses because a newer version is
    stored, the insert collides with its ``_id``."""
    try:
        result = await coll.update_one(
            {"_id": _id, "version": {"$lte": version}},
            {"$set": {**fields, "version": version}},
            upsert=True,
        )
    except DuplicateKeyError:
        return False
    return result.matched_count == 1 or result.upserted_id is not None


def product_to_doc(p: Product) -> Document:
    return {
        "_id": p.product_id,
        "account_id": p.account_id,
        "kind": int(p.kind),
        "name": p.name,
        "protocol": int(p.protocol),
        "upload_frequency_seconds": p.upload_frequency_seconds,
        "heartbeat_interval_seconds": p.heartbeat_interval_seconds,
        "registration_email": p.registration_email,
        "upload_bandwidth": p.upload_bandwidth,
        "download_bandwidth": p.download_bandwidth,
        "state": int(p.state),
        "user_name": p.user_name,
        "password_hash": p.password_hash,
        "registered_at": p.registered_at,
        "updated_at": p.updated_at,
        "version": p.version,
        "ssh_public_keys": list(p.ssh_public_keys),
        "client_cert_sha256": p.client_cert_sha256,
        "credentials_version": p.credentials_version,
    }


def product_from_doc(d: Document) -> Product:
    return Product(
        product_id=d["_id"],
        account_id=d["account_id"],
        kind=Kind(d["kind"]),
        name=d["name"],
        protocol=Protocol_(d["protocol"]),
        upload_frequency_seconds=d["upload_frequency_seconds"],
        heartbeat_interval_seconds=d["heartbeat_interval_seconds"],
        registration_email=d["registration_email"],
        upload_bandwidth=d["upload_bandwidth"],
        download_bandwidth=d["download_bandwidth"],
        state=State(d["state"]),
        user_name=d["user_name"],
        password_hash=d["password_hash"],
        registered_at=_utc(d["registered_at"]),
        updated_at=_utc(d["updated_at"]),
        version=d["version"],
        ssh_public_keys=tuple(d.get("ssh_public_keys", ())),
        client_cert_sha256=d.get("client_cert_sha256", ""),
        credentials_version=d.get("credentials_version", 1),
    )


class MongoProducts:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["products"]

    async def get(self, product_id: str) -> Product | None:
        doc = await self.coll.find_one({"_id": product_id})
        return product_from_doc(doc) if doc else None

    async def by_user_name(self, user_name: str) -> Product | None:
        doc = await self.coll.find_one({"user_name": user_name})
        return product_from_doc(doc) if doc else None

    async def add(self, product: Product) -> None:
        try:
            await self.coll.insert_one(product_to_doc(product))
        except DuplicateKeyError as exc:
            if await self.coll.find_one({"_id": product.product_id}, {"_id": 1}) is None:
                raise  # another unique key (a user name drawn twice): not a retry
            raise ProductExists(product.product_id) from exc

    async def update(self, product: Product, expected_version: int) -> None:
        result = await self.coll.replace_one(
            {"_id": product.product_id, "version": expected_version}, product_to_doc(product)
        )
        if result.matched_count != 1:
            raise VersionConflict(product.product_id)

    async def list_for_account(self, account_id: str) -> list[Product]:
        cursor = self.coll.find({"account_id": account_id}).sort("_id", ASCENDING)
        return [product_from_doc(d) async for d in cursor]


class MongoAccounts:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["accounts"]

    async def get(self, account_id: str) -> AccountView | None:
        d = await self.coll.find_one({"_id": account_id})
        if d is None:
            return None
        until = d.get("valid_until")
        return AccountView(
            account_id=d["_id"],
            managed_by_email=d.get("managed_by_email", ""),
            valid_until=_utc(until) if until else None,
            deleted=bool(d.get("deleted")),
            version=d.get("version", 0),
        )

    async def upsert(self, account: AccountView) -> bool:
        doc = {
            "managed_by_email": account.managed_by_email,
            "valid_until": account.valid_until,
            "deleted": account.deleted,
        }
        return await _store_unless_newer(self.coll, account.account_id, account.version, doc)


class MongoLedger:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["uploads"]

    async def find(self, product_id: str, content_sha256: str) -> LedgerEntry | None:
        d = await self.coll.find_one({"_id": f"{product_id}:{content_sha256}"})
        if d is None:
            return None
        return LedgerEntry(product_id, content_sha256, d["file_name"], d["accepted"], d["rejected"])

    async def record(self, entry: LedgerEntry) -> None:
        await insert_idempotent(
            self.coll,
            {
                "_id": f"{entry.product_id}:{entry.content_sha256}",
                "product_id": entry.product_id,
                "file_name": entry.file_name,
                "accepted": entry.accepted,
                "rejected": entry.rejected,
                "recorded_at": datetime.now(UTC),
            },
        )


class MongoTasks:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["tasks"]

    async def add(self, task: status_pb2.MitigationTask) -> None:
        await insert_idempotent(
            self.coll,
            {
                "_id": task.task_id,
                "product_id": task.product_id,
                "account_id": task.account_id,
                "payload": task.SerializeToString(),
                "acknowledged": False,
            },
        )

    async def pending(self, product_id: str, limit: int) -> list[status_pb2.MitigationTask]:
        cursor = (
            self.coll.find({"product_id": product_id, "acknowledged": False})
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        out = []
        async for d in cursor:
            task = status_pb2.MitigationTask()
            task.ParseFromString(bytes(d["payload"]))
            out.append(task)
        return out

    async def get(self, task_id: str) -> status_pb2.MitigationTask | None:
        d = await self.coll.find_one({"_id": task_id})
        if d is None:
            return None
        task = status_pb2.MitigationTask()
        task.ParseFromString(bytes(d["payload"]))
        return task

    async def acknowledge(self, product_id: str, task_ids: Iterable[str]) -> int:
        ids = list(task_ids)
        if not ids:
            return 0
        result = await self.coll.update_many(
            {"_id": {"$in": ids}, "product_id": product_id}, {"$set": {"acknowledged": True}}
        )
        return result.modified_count


def _pattern_from_doc(d: Document) -> CleanupPattern:
    updated = d.get("updated_at")
    return CleanupPattern(
        account_id=d["account_id"],
        name=d["name"],
        content=bytes(d.get("content", b"")),
        content_sha256=d.get("content_sha256", ""),
        size=d.get("size", 0),
        version=d["version"],
        deleted=bool(d.get("deleted")),
        updated_at=_utc(updated) if updated else None,
        description=d.get("description", ""),
    )


class MongoPatterns:
    """The accounts' cleanup patterns, ``_id`` = ``account_id/name``; a removal stays as a
    tombstone (no content) holding its version."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["cleanup_patterns"]

    async def put(self, pattern: CleanupPattern) -> bool:
        doc = {
            "account_id": pattern.account_id,
            "name": pattern.name,
            "content": b"" if pattern.deleted else pattern.content,
            "content_sha256": "" if pattern.deleted else pattern.content_sha256,
            "size": 0 if pattern.deleted else pattern.size,
            "deleted": pattern.deleted,
            "updated_at": pattern.updated_at,
            "description": pattern.description,
        }
        return await _store_unless_newer(self.coll, pattern.key, pattern.version, doc)

    async def get(self, account_id: str, name: str) -> CleanupPattern | None:
        d = await self.coll.find_one({"_id": pattern_key(account_id, name)})
        return _pattern_from_doc(d) if d else None

    async def names(self, account_id: str) -> list[CleanupPattern]:
        cursor = self.coll.find({"account_id": account_id, "deleted": False}, {"content": 0}).sort(
            "name", ASCENDING
        )
        return [_pattern_from_doc(d) async for d in cursor]

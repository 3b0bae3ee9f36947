"""MongoDB access with pymongo's ``AsyncMongoClient`` (Motor is deprecated).

A database per service; each service reads and writes only its own. Indexes are created at
start-up, idempotently. Works with FerretDB 1.24 (SQLite backend) and MongoDB 7/8: no
multi-document transactions (FerretDB 1.x has none), and a race between writers is decided by
inserting a document with a unique key (FerretDB 1.24 does not make a conditional
``find_one_and_update`` atomic under concurrency; a unique-index insert is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from tmsp_common.lifecycle import DependencyUnavailable

Document = dict[str, Any]


def safe_url(url: str) -> str:
    """The URL without user name or password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


async def connect(url: str, database: str, *, timeout_s: float = 5.0) -> AsyncDatabase[Document]:
    """Connect and ping; raises :class:`DependencyUnavailable` with one line if it cannot."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=int(timeout_s * 1000),
        connectTimeoutMS=int(timeout_s * 1000),
        tz_aware=True,
        uuidRepresentation="standard",
    )
    try:
        await client.admin.command("ping")
    except PyMongoError as exc:
        await client.close()
        first = str(exc).split(",")[0].split("\n")[0][:200]
        raise DependencyUnavailable(f"cannot reach MongoDB at {safe_url(url)} ({first})") from exc
    return client[database]


async def close(db: AsyncDatabase[Document]) -> None:
    await db.client.close()


async def ensure_indexes(
    db: AsyncDatabase[Document], indexes: Mapping[str, Sequence[IndexModel]]
) -> None:
    """Create the indexes that are missing (by name), one ``createIndexes`` call each.

    Existing ones are never sent again: FerretDB 1.24 (SQLite) panics and drops the
    connection when ``createIndexes`` re-creates existing indexes, which every restart would.
    """
    for collection, models in indexes.items():
        if not models:
            continue
        existing = {ix["name"] async for ix in await db[collection].list_indexes()}
        for model in models:
            if model.document["name"] not in existing:
                await db[collection].create_indexes([model])


#: Mongo's duplicate key error code (FerretDB 1.24 reports it in bulk inserts too).
DUPLICATE_KEY = 11000


async def insert_many_idempotent(
    collection: AsyncCollection[Document], documents: Sequence[Document]
) -> None:
    """Insert each document once: those already there (duplicate keys: a replay) are
    skipped, any other write error raises."""
    if not documents:
        return
    try:
        await collection.insert_many(list(documents), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise


async def insert_idempotent(collection: AsyncCollection[Document], document: Document) -> bool:
    """Insert once: a duplicate key (the event was seen before) counts as success.

    Returns True when this call stored the document, False when it was already there.
    """
    try:
        await collection.insert_one(document)
    except DuplicateKeyError:
        return False
    return True

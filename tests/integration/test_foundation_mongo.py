"""Storage helpers against the real Mongo-wire server."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING, IndexModel

from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.mongo import close, connect, ensure_indexes, insert_idempotent
from tmsp_common.testing import Infra

pytestmark = [pytest.mark.integration, pytest.mark.mongo]


async def test_insert_replayed_twice_stores_once(infra: Infra, names: Any) -> None:
    db = await connect(infra.mongo_url, names.database("store"))
    try:
        indexes = {
            "events": [
                IndexModel([("event_id", ASCENDING)], unique=True),
                IndexModel([("threat", ASCENDING)]),
            ]
        }
        await ensure_indexes(db, indexes)
        await ensure_indexes(db, indexes)  # every restart; FerretDB drops the link if re-sent
        doc = {"event_id": "e-1", "threat": "WORM_X"}
        assert await insert_idempotent(db["events"], dict(doc)) is True
        assert await insert_idempotent(db["events"], dict(doc)) is False
        assert await db["events"].count_documents({"event_id": "e-1"}) == 1
    finally:
        await db.client.drop_database(db.name)
        await close(db)


async def test_unreachable_server_is_one_clear_line() -> None:
    with pytest.raises(DependencyUnavailable) as exc:
        await connect("mongodb://user:secret@127.0.0.1:1/", "x", timeout_s=0.5)
    message = str(exc.value)
    assert message.startswith("cannot reach MongoDB at mongodb://127.0.0.1:1")
    assert "secret" not in message
    assert "\n" not in message

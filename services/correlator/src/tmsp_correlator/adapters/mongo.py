"""The correlator's own Mongo database: incidents, nonconforming endpoints, liveness.

Single-document atomic operations only (FerretDB 1.x has no transactions): incidents are
upserted under a version guard, the other documents are changed with compare-and-set.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tmsp_common.mongo import DUPLICATE_KEY, Document, ensure_indexes
from tmsp_correlator.domain.correlation import OPEN_STATUSES as _OPEN

INCIDENTS = "incidents"
NONCONFORMING = "nonconforming_endpoints"
LIVENESS = "product_liveness"
SETTINGS = "settings"
RULE_FILES = "rule_files"
OPEN_STATUSES = list(_OPEN)


async def is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    """Whether the server is FerretDB (it says so in buildInfo)."""
    info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    await ensure_indexes(
        db,
        {
            INCIDENTS: [
                IndexModel([("account_id", ASCENDING), ("status", ASCENDING)]),
                IndexModel([("account_id", ASCENDING), ("last_seen", ASCENDING)]),
            ],
            NONCONFORMING: [IndexModel([("account_id", ASCENDING), ("cleared", ASCENDING)])],
        },
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def incident_document(inc: dict[str, Any]) -> Document:
    return {
        "account_id": inc["account_id"],
        "rule_ids": inc["rule_ids"],
        "title": inc["title"],
        "description": inc.get("description", ""),
        "severity": inc["severity"],
        "group": inc.get("group", {}),
        "endpoints": [{"host": h, "ip": i, "mac": m} for h, i, m in inc["endpoints"]],
        "first_seen": _dt(inc["first"]),
        "last_seen": _dt(inc["last"]),
        "event_count": inc["count"],
        "event_ids": inc["event_ids"],
        "timeline": [
            {
                "at": _dt(at),
                "event_id": eid,
                "rule_id": rid,
                "summary": summary,
                "endpoint": {"host": h, "ip": i, "mac": m},
            }
            for at, eid, rid, summary, h, i, m in inc["timeline"]
        ],
        "attack_tags": inc["tags"],
        "recommended_actions": inc["actions"],
        "status": inc.get("status", "new"),
        "group_key": inc.get("key", ""),
        "status_note": inc.get("note", ""),
        "status_changed_by": inc.get("by", ""),
        "status_changed_at": _dt(inc["changed_at"]) if inc.get("changed_at") else None,
        "version": inc["version"],
        "updated_at": datetime.now(UTC),
    }


def incident_state(doc: Document) -> dict[str, Any]:
    """The incident state dict (see domain.correlation) of a stored incident: the inverse
    of :func:`incident_document`."""

    def ep(e: Document) -> list[str]:
        return [e.get("host", ""), e.get("ip", ""), e.get("mac", "")]

    inc: dict[str, Any] = {
        "id": doc["_id"],
        "account_id": doc["account_id"],
        "rule_ids": list(doc["rule_ids"]),
        "title": doc["title"],
        "description": doc.get("description", ""),
        "severity": doc["severity"],
        "group": dict(doc.get("group") or {}),
        "endpoints": [ep(e) for e in doc["endpoints"]],
        "first": doc["first_seen"].timestamp(),  # tz-aware: tmsp_common.mongo.connect
        "last": doc["last_seen"].timestamp(),
        "count": doc["event_count"],
        "event_ids": list(doc["event_ids"]),
        "timeline": [
            [t["at"].timestamp(), t["event_id"], t["rule_id"], t["summary"], *ep(t["endpoint"])]
            for t in doc["timeline"]
        ],
        "tags": list(doc["attack_tags"]),
        "actions": list(doc["recommended_actions"]),
        "status": doc.get("status", "new"),
        "version": int(doc["version"]),
    }
    if doc.get("group_key"):
        inc["key"] = doc["group_key"]
    if doc.get("status_changed_at"):
        inc.update(
            note=doc.get("status_note", ""),
            by=doc.get("status_changed_by", ""),
            changed_at=doc["status_changed_at"].timestamp(),
        )
    return inc


def incident_update(inc: dict[str, Any]) -> Document:
    doc = incident_document(inc)
    return {"$set": doc, "$setOnInsert": {"created_at": doc["updated_at"]}}


def _incident_insert(inc: dict[str, Any]) -> Document:
    """The document an upsert of ``incident_update(inc)`` creates."""
    doc = incident_document(inc)
    return {"_id": inc["id"], **doc, "created_at": doc["updated_at"]}


class MongoIncidents:
    """Incidents, written by ``_id`` only.

    On FerretDB 1.24 an update whose filter holds more than ``_id`` scans the collection
    (measured: 0.8 s per guarded update against 0.14 s by ``_id`` with 3,000 incidents; an
    update by ``_id`` scans too, hence the batch replace), and so does an ``$in`` read of
    the stored versions, so the version guard is applied here:
    the versions this worker wrote are remembered (it owns the partitions of its incidents)
    and only newer versions are written. An incident it does not remember is inserted: if
    that succeeds nothing was stored; a duplicate key means some version is stored, which is
    then read once and compared. A replay after a restart therefore writes nothing it had
    stored.
    """

    #: How many incident versions are remembered; older ones are read again when needed.
    KNOWN_VERSIONS = 100_000

    def __init__(self, db: AsyncDatabase[Document], *, replace_in_bulk: bool = False) -> None:
        self.coll = db[INCIDENTS]
        self._versions: OrderedDict[str, int] = OrderedDict()
        self.replace_in_bulk = replace_in_bulk
        """Change stored incidents by deleting and re-inserting a batch (FerretDB), not by
        one update each (MongoDB): see :meth:`_replace`."""

    def forget(self) -> None:
        self._versions.clear()

    def _remember(self, incident_id: str, version: int) -> None:
        self._versions[incident_id] = version
        self._versions.move_to_end(incident_id)
        while len(self._versions) > self.KNOWN_VERSIONS:
            self._versions.popitem(last=False)

    async def _insert_new(self, incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert incidents (one round trip); returns those already stored (duplicate keys)."""
        if not incidents:
            return []
        try:
            await self.coll.insert_many([_incident_insert(i) for i in incidents], ordered=False)
            failed: set[int] = set()
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        for n, inc in enumerate(incidents):
            if n not in failed:
                self._remember(inc["id"], inc["version"])
        return [inc for n, inc in enumerate(incidents) if n in failed]

    async def upsert_many(self, incidents: list[dict[str, Any]]) -> set[str]:
        if not incidents:
            return set()
        known = [inc for inc in incidents if inc["id"] in self._versions]
        unknown = [inc for inc in incidents if inc["id"] not in self._versions]
        present = await self._insert_new(unknown)
        stored_ids = {inc["id"] for inc in unknown} - {inc["id"] for inc in present}
        # remembered ones and those stored before: their versions, read once when unknown
        rest = known + present
        versions = {i["id"]: self._versions[i["id"]] for i in rest if i["id"] in self._versions}
        # a batch replace needs what the stored documents keep, so it reads them all (one
        # find that also brings the versions); otherwise only the unknown versions are read
        read = rest if self.replace_in_bulk else [i for i in present if i["id"] not in versions]
        kept: dict[str, Document] = {}
        if read:
            fields = {"version": 1, "created_at": 1}
            async for d in self.coll.find({"_id": {"$in": [i["id"] for i in read]}}, fields):
                kept[d["_id"]] = d
                versions.setdefault(d["_id"], int(d.get("version", 0)))
        todo = [inc for inc in rest if versions.get(inc["id"], 0) < inc["version"]]
        if not todo:
            return stored_ids
        if self.replace_in_bulk:
            await self._replace(todo, kept)
        else:
            # by _id only and never an upsert (every id here is stored): no duplicate key
            result = await self.coll.bulk_write(
                [UpdateOne({"_id": i["id"]}, incident_update(i)) for i in todo], ordered=False
            )
            if result.matched_count < len(todo):
                # remembered but gone: log maintenance (another worker's) removed them
                await self._insert_missing(todo)
        for inc in todo:
            self._remember(inc["id"], inc["version"])
        return stored_ids | {inc["id"] for inc in todo}

    async def _replace(self, incidents: list[dict[str, Any]], kept: dict[str, Document]) -> None:
        """Newer versions of stored incidents: delete them and insert the new documents with
        what the stored ones keep (``kept``: created_at), two statements for the
        whole batch.

        On FerretDB 1.24 (SQLite) every update or delete statement scans the collection, even
        by ``_id`` (measured: 0.1 s each with 100 incidents of 200 timeline entries, growing
        with the collection), while an insert uses the ``_id`` index: with one update per
        incident the store stage of the benchmark had not caught up after 400 s. The price:
        between the delete and the insert a reader misses these incidents, and a crash
        there leaves them missing until the store stage replays its uncommitted batch (its
        offsets are committed after this returns), which re-inserts them.
        """
        await self.coll.delete_many({"_id": {"$in": [inc["id"] for inc in incidents]}})
        docs = []
        for inc in incidents:
            doc = _incident_insert(inc)
            old = kept.get(inc["id"], {})
            doc["created_at"] = old.get("created_at", doc["created_at"])
            docs.append(doc)
        await self.coll.insert_many(docs, ordered=False)

    async def _insert_missing(self, incidents: list[dict[str, Any]]) -> None:
        ids = [i["id"] for i in incidents]
        present = {d["_id"] async for d in self.coll.find({"_id": {"$in": ids}}, {"_id": 1})}
        missing = [i for i in incidents if i["id"] not in present]
        if missing:
            await self._insert_new(missing)

    async def purge(self, last_seen_before: datetime) -> int:
        ids = [
            d["_id"]
            async for d in self.coll.find({"last_seen": {"$lt": last_seen_before}}, {"_id": 1})
        ]
        if not ids:
            return 0
        result = await self.coll.delete_many({"_id": {"$in": ids}})
        for incident_id in ids:
            self._versions.pop(incident_id, None)
        return int(result.deleted_count)

    async def get(self, incident_id: str) -> Document | None:
        return await self.coll.find_one({"_id": incident_id})

    async def load(self, incident_id: str) -> dict[str, Any] | None:
        doc = await self.get(incident_id)
        return None if doc is None else incident_state(doc)

    async def counts(self, account_id: str) -> tuple[int, int]:
        # one pass (by status) rather than two count_documents: each filter beyond _id
        # scans the whole collection on FerretDB 1.24
        by_status: dict[Any, int] = {}
        async for row in await self.coll.aggregate(
            [
                {"$match": {"account_id": account_id}},
                {"$group": {"_id": "$status", "n": {"$sum": 1}}},
            ]
        ):
            by_status[row["_id"]] = int(row["n"])
        open_ = sum(n for status, n in by_status.items() if status in OPEN_STATUSES)
        return open_, sum(by_status.values())

    async def all_counts(self) -> dict[str, tuple[int, int]]:
        totals: dict[str, int] = {}
        opens: dict[str, int] = {}
        async for row in await self.coll.aggregate(
            [{"$group": {"_id": "$account_id", "n": {"$sum": 1}}}]
        ):
            totals[str(row["_id"])] = int(row["n"])
        async for row in await self.coll.aggregate(
            [
                {"$match": {"status": {"$in": OPEN_STATUSES}}},
                {"$group": {"_id": "$account_id", "n": {"$sum": 1}}},
            ]
        ):
            opens[str(row["_id"])] = int(row["n"])
        return {a: (opens.get(a, 0), t) for a, t in totals.items()}


#: State fields keyed by threat name. Threat names are outside input (``TROJ_EMOTET.SM``,
#: ``$x``): MongoDB and FerretDB refuse such field names, so they are stored as a list of
#: ``{"threat", "value"}`` documents (FerretDB 1.24 refuses nested arrays).
_THREAT_MAPS = ("threats", "seen")


def _nonconforming_doc(state: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in state.items() if k != "_id"}
    for name in _THREAT_MAPS:
        if isinstance(doc.get(name), dict):
            doc[name] = [{"threat": t, "value": v} for t, v in doc[name].items()]
    return doc


def _nonconforming_state(doc: dict[str, Any]) -> dict[str, Any]:
    for name in _THREAT_MAPS:
        if isinstance(doc.get(name), list):
            doc[name] = {pair["threat"]: pair["value"] for pair in doc[name]}
    return doc


class MongoNonconforming:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db[NONCONFORMING]

    async def get(self, key: str) -> dict[str, Any] | None:
        doc = await self.coll.find_one({"_id": key})
        return None if doc is None else _nonconforming_state(doc)

    async def put(self, key: str, state: dict[str, Any], expected_version: int) -> bool:
        doc = _nonconforming_doc(state)
        if expected_version == 0:
            try:
                await self.coll.insert_one({"_id": key, **doc})
            except DuplicateKeyError:
                return False
            return True
        result = await self.coll.replace_one({"_id": key, "version": expected_version}, doc)
        return bool(result.modified_count)

    async def purge_cleared(self, updated_before: float) -> int:
        result = await self.coll.delete_many({"cleared": True, "updated": {"$lt": updated_before}})
        return int(result.deleted_count)


class MongoMaintenance:
    """One document: the log maintenance settings last heard from the bus."""

    ID = "log_maintenance"

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db[SETTINGS]

    async def log_retention(self) -> tuple[int, datetime | None] | None:
        doc = await self.coll.find_one({"_id": self.ID})
        if doc is None:
            return None
        return int(doc["log_retention_days"]), doc.get("updated_at")

    async def set_log_retention(self, days: int, updated_at: datetime | None) -> bool:
        """Compare-and-set on ``updated_at`` (unset sorts first: the never-changed
        defaults the reporter publishes at start-up do not replace an operator's change)."""
        new = {"log_retention_days": days, "updated_at": updated_at, "at": _order(updated_at)}
        while True:
            doc = await self.coll.find_one({"_id": self.ID})
            if doc is None:
                try:
                    await self.coll.insert_one({"_id": self.ID, **new})
                    return True
                except DuplicateKeyError:
                    continue
            if _order(updated_at) < float(doc.get("at", 0.0)):
                return False
            result = await self.coll.replace_one({"_id": self.ID, "at": doc.get("at")}, new)
            if result.matched_count:
                return True


class MongoRuleFiles:
    """The last version of each rule file that loaded without a rejection, so a worker
    that starts with a broken file runs that file's last clean version (as a reload does),
    not only its good rules."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db[RULE_FILES]

    async def load(self) -> dict[str, str]:
        return {str(d["_id"]): str(d["text"]) async for d in self.coll.find({})}

    async def save(self, clean: dict[str, str]) -> None:
        """Make the stored versions ``clean``: changed files replaced, gone ones removed."""
        stored = await self.load()
        for name, text in clean.items():
            if stored.get(name) != text:
                await self.coll.replace_one(
                    {"_id": name}, {"text": text, "saved_at": datetime.now(UTC)}, upsert=True
                )
        gone = [name for name in stored if name not in clean]
        if gone:
            await self.coll.delete_many({"_id": {"$in": gone}})


def _order(updated_at: datetime | None) -> float:
    return updated_at.timestamp() if updated_at is not None else 0.0


class MongoLiveness:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db[LIVENESS]

    async def heartbeat(
        self,
        product_id: str,
        account_id: str,
        at: float,
        interval_s: float | None,
        compliance: bool | None,
    ) -> dict[str, Any] | None:
        fields: dict[str, Any] = {"account_id": account_id}
        if interval_s:
            fields["heartbeat_interval_s"] = interval_s
        if compliance is not None:
            fields["compliance"] = compliance
        return await self.coll.find_one_and_update(
            {"_id": product_id},
            {"$max": {"last_heartbeat_at": at}, "$set": fields},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )

    async def upload(self, product_id: str, account_id: str, at: float) -> dict[str, Any] | None:
        return await self.coll.find_one_and_update(
            {"_id": product_id},
            {"$max": {"last_upload_at": at}, "$set": {"account_id": account_id}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )

    async def product(
        self,
        product_id: str,
        account_id: str,
        heartbeat_interval_s: float,
        upload_frequency_s: float,
        deregistered: bool,
    ) -> None:
        fields: dict[str, Any] = {"account_id": account_id, "deregistered": deregistered}
        if heartbeat_interval_s:
            fields["heartbeat_interval_s"] = heartbeat_interval_s
        if upload_frequency_s:
            fields["upload_frequency_s"] = upload_frequency_s
        await self.coll.update_one({"_id": product_id}, {"$set": fields}, upsert=True)

    async def mark(self, product_id: str, expect: dict[str, Any], change: dict[str, Any]) -> bool:
        result = await self.coll.update_one({"_id": product_id, **expect}, {"$set": change})
        return bool(result.modified_count)

    async def scan(self) -> list[dict[str, Any]]:
        return [d async for d in self.coll.find({})]

    async def get(self, product_id: str) -> dict[str, Any] | None:
        return await self.coll.find_one({"_id": product_id})

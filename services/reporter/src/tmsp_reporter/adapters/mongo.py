"""The reporter's own database: the read model fed from the bus, reports, settings.

Projections are idempotent: each write carries a guard (version, as-of or event time) that
is compared with the stored one first, so a redelivered or older event changes nothing.
Filters are by ``_id`` alone: on FerretDB 1.24 (SQLite) any further condition in an update
filter turns the write into a collection scan (measured: 15 ms by ``_id``, 300-600 ms with
a guard condition on 3000 documents), which made the projection quadratic. Each document
has one writer (one consumer group, partition order; FerretDB writes whole documents back,
so two writers of different fields of one document could undo each other): products,
their heartbeats, their uploads and their liveness are four collections for that reason
(heartbeats and uploads are two topics of one group, so two replicas may handle them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from tmsp.events.v1 import accounts_pb2, incidents_pb2, products_pb2, status_pb2
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.mongo import Document, ensure_indexes, insert_idempotent
from tmsp_common.severity import Severity
from tmsp_reporter.adapters import convert
from tmsp_reporter.adapters.convert import clean, ts
from tmsp_reporter.domain.model import (
    AccountRow,
    IncidentCountRow,
    IncidentStatus,
    ProductRow,
    ReportSchedule,
)
from tmsp_reporter.domain.retention import LogMaintenance

INDEXES: dict[str, list[IndexModel]] = {
    "accounts": [IndexModel([("name_key", ASCENDING), ("_id", ASCENDING)], name="by_name")],
    "products": [IndexModel([("account_id", ASCENDING)], name="by_account")],
    "product_status": [IndexModel([("account_id", ASCENDING)], name="by_account")],
    "product_uploads": [IndexModel([("account_id", ASCENDING)], name="by_account")],
    "product_liveness": [IndexModel([("account_id", ASCENDING)], name="by_account")],
    "incidents": [
        IndexModel(
            [("account_id", ASCENDING), ("last_seen", DESCENDING), ("_id", DESCENDING)],
            name="by_account_last_seen",
        ),
        IndexModel([("last_seen", DESCENDING), ("_id", DESCENDING)], name="by_last_seen"),
    ],
    "nonconforming": [
        IndexModel([("account_id", ASCENDING), ("updated_at", DESCENDING)], name="by_account")
    ],
    "reports": [
        IndexModel(
            [("account_id", ASCENDING), ("period_start", DESCENDING), ("_id", DESCENDING)],
            name="by_account_period",
        ),
        IndexModel([("created_at", ASCENDING)], name="by_created"),
    ],
    "report_chunks": [IndexModel([("report_id", ASCENDING), ("n", ASCENDING)], name="by_report")],
    "recipients": [IndexModel([("account_id", ASCENDING)], name="by_account")],
    "mitigation_tasks": [
        IndexModel(
            [("account_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="by_account_created",
        )
    ],
    "cleanup_patterns": [
        IndexModel([("account_id", ASCENDING), ("name", ASCENDING)], name="by_account_name"),
        # the republisher's query: changes whose publication failed
        IndexModel([("published", ASCENDING)], name="by_published"),
    ],
    "forensic_uploads": [
        IndexModel(
            [("account_id", ASCENDING), ("received_at", DESCENDING), ("_id", DESCENDING)],
            name="by_account_received",
        ),
        IndexModel([("received_at", ASCENDING)], name="by_received"),
    ],
    "forensic_chunks": [IndexModel([("upload_id", ASCENDING)], name="by_upload")],
}


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    await ensure_indexes(db, INDEXES)


async def _guarded_upsert(
    coll: AsyncCollection[Document], _id: str, guard: str, value: Any, update: Document
) -> bool:
    """Apply ``update`` unless the stored ``guard`` is newer than ``value`` (then False).

    ``update`` must ``$set`` the guard. Read and write are by ``_id`` only (see above); the
    document's single writer makes the read-then-write safe.
    """
    stored = await coll.find_one({"_id": _id}, {guard: 1})
    if stored is not None and stored.get(guard) is not None and stored[guard] > value:
        return False
    await coll.update_one({"_id": _id}, update, upsert=True)
    return True


def _account_filter(account_id: str | None) -> Document:
    return {} if account_id is None else {"account_id": account_id}


class ReadModel:
    """Accounts, products, incidents, counts, nonconforming endpoints (projections)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.accounts = db["accounts"]
        self.products = db["products"]
        self.status = db["product_status"]
        self.uploads = db["product_uploads"]
        self.liveness = db["product_liveness"]
        self.incidents = db["incidents"]
        self.counts = db["incident_counts"]
        self.nonconforming = db["nonconforming"]
        self.tasks = db["mitigation_tasks"]
        """Keyed by product id / task id: a product acknowledges only its own tasks."""

    # --- projections -----------------------------------------------------------------

    async def apply_account(self, s: accounts_pb2.AccountSnapshot, at: datetime) -> bool:
        """``at`` (the event's time) becomes ``first_seen`` the first time: periodic reports
        start with the first period that ends after it."""
        doc = convert.account_doc(s)
        _id = doc.pop("_id")
        update = {"$set": doc, "$setOnInsert": {"first_seen": at}}
        return await _guarded_upsert(self.accounts, _id, "version", s.version, update)

    async def apply_product(self, s: products_pb2.ProductSnapshot) -> bool:
        fields = convert.product_fields(s)
        return await _guarded_upsert(
            self.products, s.product_id, "version", s.version, {"$set": fields}
        )

    async def apply_upload(self, u: status_pb2.UploadReceived, at: datetime) -> None:
        finished = ts(u.finished_at) or at
        await self.uploads.update_one(
            {"_id": u.product_id},
            {"$max": {"last_received": finished}, "$set": {"account_id": u.account_id}},
            upsert=True,
        )

    async def apply_heartbeat(self, h: status_pb2.Heartbeat, at: datetime) -> bool:
        received = ts(h.received_at) or at
        fields: Document = {"account_id": h.account_id, "heartbeat_at": received}
        if h.HasField("security_compliance_enabled"):
            fields["security_compliance"] = h.security_compliance_enabled
        if h.product_kind:
            fields["kind"] = int(h.product_kind)
        return await _guarded_upsert(
            self.status, h.product_id, "heartbeat_at", received, {"$set": fields}
        )

    async def apply_task(self, t: status_pb2.MitigationTask, at: datetime) -> None:
        """A task as issued. Its product's acknowledgement may have been projected first
        (another topic): both upsert one document and neither overwrites the other."""
        fields: Document = {
            "account_id": t.account_id,
            "product_id": t.product_id,
            "created_at": ts(t.created_at) or at,
            "pb": t.SerializeToString(),
        }
        await self.tasks.update_one(
            {"_id": f"{t.product_id}/{t.task_id}"}, {"$set": fields}, upsert=True
        )

    async def acknowledge_tasks(self, h: status_pb2.Heartbeat, at: datetime) -> None:
        """The tasks a heartbeat acknowledges: the first acknowledgement's time is kept."""
        received = ts(h.received_at) or at
        for task_id in h.acknowledged_task_ids:
            await self.tasks.update_one(
                {"_id": f"{h.product_id}/{task_id}"},
                {"$min": {"acknowledged_at": received}},
                upsert=True,
            )

    async def list_tasks(
        self,
        account_id: str,
        product_id: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[tuple[status_pb2.MitigationTask, datetime | None]]:
        filt: Document = {"account_id": account_id}
        if product_id:
            filt["product_id"] = product_id
        if after is not None:
            at, key = after
            keyset = [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": key}}]
            filt = {"$and": [filt, {"$or": keyset}]}
        cursor = self.tasks.find(filt).sort([("created_at", -1), ("_id", -1)]).limit(limit)
        out = []
        async for d in cursor:
            task = status_pb2.MitigationTask()
            task.ParseFromString(bytes(d["pb"]))
            out.append((task, d.get("acknowledged_at")))
        return out

    async def apply_liveness(self, p: incidents_pb2.ProductLiveness, at: datetime) -> bool:
        since = ts(p.since) or at
        fields: Document = {
            "account_id": p.account_id,
            "liveness": int(p.state),
            "liveness_since": since,
        }
        if (upload := ts(p.last_upload_at)) is not None:
            fields["last_upload_at"] = upload
        return await _guarded_upsert(
            self.liveness, p.product_id, "liveness_since", since, {"$set": fields}
        )

    async def apply_incident(self, i: incidents_pb2.Incident, at: datetime) -> bool:
        if not i.HasField("first_seen"):
            i.first_seen.CopyFrom(i.updated_at if i.HasField("updated_at") else to_timestamp(at))
        if not i.HasField("last_seen"):
            i.last_seen.CopyFrom(i.first_seen)
        doc = convert.incident_doc(i)
        _id = doc.pop("_id")
        return await _guarded_upsert(
            self.incidents, _id, "version", i.version, {"$set": clean(doc)}
        )

    async def apply_count(self, c: incidents_pb2.IncidentCount, at: datetime) -> bool:
        as_of = ts(c.as_of) or at
        _id = f"{c.account_id}:{'daily' if c.daily else 'live'}"
        fields = {
            "account_id": c.account_id,
            "daily": c.daily,
            "open_incidents": c.open_incidents,
            "total_incidents": c.total_incidents,
            "as_of": as_of,
        }
        return await _guarded_upsert(self.counts, _id, "as_of", as_of, {"$set": fields})

    async def apply_nonconforming(
        self, n: incidents_pb2.NonconformingEndpoint, at: datetime
    ) -> bool:
        if not n.HasField("updated_at"):
            n.updated_at.CopyFrom(to_timestamp(at))
        doc = convert.nonconforming_doc(n)
        _id = doc.pop("_id")
        return await _guarded_upsert(
            self.nonconforming, _id, "updated_at", doc["updated_at"], {"$set": clean(doc)}
        )

    # --- queries ---------------------------------------------------------------------

    async def account(self, account_id: str) -> AccountRow | None:
        doc = await self.accounts.find_one({"_id": account_id})
        return convert.account_row(doc) if doc else None

    async def list_accounts(
        self,
        account_id: str | None,
        *,
        limit: int,
        after: tuple[str, str] | None,
        include_deleted: bool,
    ) -> list[AccountRow]:
        filt: Document = {} if account_id is None else {"_id": account_id}
        if not include_deleted:
            filt["deleted"] = {"$ne": True}
        if after is not None:
            name, aid = after
            filt["$or"] = [{"name_key": {"$gt": name}}, {"name_key": name, "_id": {"$gt": aid}}]
        cursor = self.accounts.find(filt).sort([("name_key", 1), ("_id", 1)]).limit(limit)
        return [convert.account_row(d) async for d in cursor]

    async def active_account_ids(self) -> list[str]:
        return [d["_id"] async for d in self.accounts.find({"deleted": {"$ne": True}}, {"_id": 1})]

    async def _products(self, filt: Document) -> list[ProductRow]:
        parts: dict[str, Document] = {}
        for coll in (self.products, self.status, self.uploads, self.liveness):
            async for d in coll.find(filt):
                parts.setdefault(d["_id"], {"_id": d["_id"]}).update(d)
        rows = [convert.product_row(d) for d in parts.values()]
        return sorted(rows, key=lambda p: (p.name.lower(), p.product_id))

    async def products_of(self, account_ids: Sequence[str]) -> list[ProductRow]:
        """The products of these accounts with their status and liveness, by name."""
        return await self._products({"account_id": {"$in": list(account_ids)}})

    async def product(self, product_id: str) -> ProductRow | None:
        doc = await self.products.find_one({"_id": product_id})
        return convert.product_row(doc) if doc else None

    async def counts_of(
        self, account_ids: Sequence[str]
    ) -> dict[tuple[str, bool], IncidentCountRow]:
        out: dict[tuple[str, bool], IncidentCountRow] = {}
        async for d in self.counts.find({"account_id": {"$in": list(account_ids)}}):
            out[(d["account_id"], bool(d.get("daily")))] = IncidentCountRow(
                int(d.get("open_incidents", 0)), int(d.get("total_incidents", 0)), d.get("as_of")
            )
        return out

    async def nonconforming_counts(self, account_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        cursor = self.nonconforming.find(
            {"account_id": {"$in": list(account_ids)}, "cleared": {"$ne": True}}, {"account_id": 1}
        )
        async for d in cursor:
            out[d["account_id"]] = out.get(d["account_id"], 0) + 1
        return out

    def _incident_filter(
        self,
        account_id: str | None,
        statuses: Sequence[IncidentStatus],
        min_severity: Severity,
        since: datetime | None,
        until: datetime | None,
    ) -> Document:
        filt = _account_filter(account_id)
        if statuses:
            filt["status"] = {"$in": [int(s) for s in statuses]}
        if min_severity > Severity.UNSPECIFIED:
            filt["severity"] = {"$gte": int(min_severity)}
        if since is not None:
            filt["last_seen"] = {"$gte": since}
        if until is not None:
            filt["first_seen"] = {"$lt": until}
        return filt

    async def list_incidents(
        self,
        account_id: str | None,
        *,
        statuses: Sequence[IncidentStatus] = (),
        min_severity: Severity = Severity.UNSPECIFIED,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[incidents_pb2.Incident]:
        filt = self._incident_filter(account_id, statuses, min_severity, since, until)
        if after is not None:
            at, iid = after
            keyset = [{"last_seen": {"$lt": at}}, {"last_seen": at, "_id": {"$lt": iid}}]
            filt = {"$and": [filt, {"$or": keyset}]} if filt else {"$or": keyset}
        cursor = self.incidents.find(filt).sort([("last_seen", -1), ("_id", -1)]).limit(limit)
        return [convert.incident_proto(d) async for d in cursor]

    async def incidents_between(
        self, account_id: str | None, since: datetime, until: datetime, *, limit: int
    ) -> AsyncIterator[incidents_pb2.Incident]:
        """Incidents active in ``[since, until)``, oldest first (reports, CSV export)."""
        filt = self._incident_filter(account_id, (), Severity.UNSPECIFIED, since, until)
        cursor = self.incidents.find(filt).sort([("first_seen", 1), ("_id", 1)]).limit(limit)
        async for d in cursor:
            yield convert.incident_proto(d)

    async def count_incidents_between(
        self, account_id: str, since: datetime, until: datetime
    ) -> int:
        filt = self._incident_filter(account_id, (), Severity.UNSPECIFIED, since, until)
        return await self.incidents.count_documents(filt)

    async def incident(
        self, account_id: str | None, incident_id: str
    ) -> incidents_pb2.Incident | None:
        doc = await self.incidents.find_one({"_id": incident_id, **_account_filter(account_id)})
        return convert.incident_proto(doc) if doc else None

    async def list_nonconforming(
        self,
        account_id: str | None,
        *,
        include_cleared: bool,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[incidents_pb2.NonconformingEndpoint]:
        filt = _account_filter(account_id)
        if not include_cleared:
            filt["cleared"] = {"$ne": True}
        if after is not None:
            at, key = after
            keyset = [{"updated_at": {"$lt": at}}, {"updated_at": at, "_id": {"$lt": key}}]
            filt = {"$and": [filt, {"$or": keyset}]} if filt else {"$or": keyset}
        cursor = self.nonconforming.find(filt).sort([("updated_at", -1), ("_id", -1)]).limit(limit)
        return [convert.nonconforming_proto(d) async for d in cursor]

    # --- log maintenance -------------------------------------------------------------

    async def purge_logs(self, cutoff: datetime) -> tuple[int, int]:
        """Remove incidents last seen, and cleared endpoints changed, before ``cutoff``."""
        incidents = await self.incidents.delete_many({"last_seen": {"$lt": cutoff}})
        endpoints = await self.nonconforming.delete_many(
            {"cleared": True, "updated_at": {"$lt": cutoff}}
        )
        return incidents.deleted_count, endpoints.deleted_count


CHUNK_BYTES = 255 * 1024


class ReportStore:
    """Report descriptions, their PDF in chunks (documents stay far below any size limit),
    claims that decide which process generates a report, recipients and schedules."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.reports = db["reports"]
        self.chunks = db["report_chunks"]
        self.claims = db["report_claims"]
        self.recipients_coll = db["recipients"]
        self.schedules = db["schedules"]
        self.settings = db["settings"]

    async def claim(self, report_id: str, attempt: int, owner: str, at: datetime) -> bool:
        """Only one process wins attempt ``attempt`` of generating ``report_id``."""
        return await insert_idempotent(
            self.claims, {"_id": f"{report_id}#{attempt}", "owner": owner, "at": at}
        )

    async def create(self, doc: Document) -> bool:
        return await insert_idempotent(self.reports, doc)

    async def get(self, report_id: str, account_id: str | None = None) -> Document | None:
        return await self.reports.find_one({"_id": report_id, **_account_filter(account_id)})

    async def update(self, report_id: str, fields: Document) -> Document | None:
        return await self.reports.find_one_and_update(
            {"_id": report_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )

    async def store_pdf(self, report_id: str, pdf: bytes) -> int:
        """Write the chunks (idempotent: a retry rewrites the same ids); returns the count."""
        count = 0
        for n, offset in enumerate(range(0, len(pdf), CHUNK_BYTES)):
            await self.chunks.replace_one(
                {"_id": f"{report_id}:{n:05d}"},
                {
                    "report_id": report_id,
                    "n": n,
                    "data": Binary(pdf[offset : offset + CHUNK_BYTES]),
                },
                upsert=True,
            )
            count = n + 1
        await self.chunks.delete_many({"report_id": report_id, "n": {"$gte": count}})
        return count

    async def pdf_chunks(self, report_id: str) -> AsyncIterator[bytes]:
        cursor = self.chunks.find({"report_id": report_id}).sort("n", 1)
        async for d in cursor:
            yield bytes(d["data"])

    async def list_reports(
        self, account_id: str, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[Document]:
        filt: Document = {"account_id": account_id}
        if after is not None:
            at, rid = after
            filt["$or"] = [
                {"period_start": {"$lt": at}},
                {"period_start": at, "_id": {"$lt": rid}},
            ]
        cursor = self.reports.find(filt).sort([("period_start", -1), ("_id", -1)]).limit(limit)
        return [d async for d in cursor]

    async def existing(self, report_ids: Sequence[str]) -> set[str]:
        cursor = self.reports.find({"_id": {"$in": list(report_ids)}}, {"_id": 1})
        return {d["_id"] async for d in cursor}

    async def unnotified(self, before: datetime, limit: int = 100) -> list[Document]:
        cursor = self.reports.find(
            {
                "state": "ready",
                "notify": True,
                "notified": {"$ne": True},
                "created_at": {"$lt": before},
            }
        ).limit(limit)
        return [d async for d in cursor]

    async def stale_generating(self, before: datetime, limit: int = 100) -> list[Document]:
        cursor = self.reports.find({"state": "generating", "claimed_at": {"$lt": before}}).limit(
            limit
        )
        return [d async for d in cursor]

    async def purge(self, cutoff: datetime) -> int:
        """Remove reports (and their chunks and claims) created before ``cutoff``."""
        ids = [
            d["_id"] async for d in self.reports.find({"created_at": {"$lt": cutoff}}, {"_id": 1})
        ]
        for rid in ids:
            await self.chunks.delete_many({"report_id": rid})
            await self.claims.delete_many({"_id": {"$regex": f"^{rid}#"}})
            await self.reports.delete_one({"_id": rid})
        return len(ids)

    # --- recipients and schedules ----------------------------------------------------

    async def recipients(self, account_id: str) -> list[str]:
        cursor = self.recipients_coll.find({"account_id": account_id})
        return sorted([d["email"] async for d in cursor])

    async def add_recipient(self, account_id: str, email: str, at: datetime) -> None:
        await insert_idempotent(
            self.recipients_coll,
            {"_id": f"{account_id}:{email}", "account_id": account_id, "email": email, "at": at},
        )

    async def remove_recipient(self, account_id: str, email: str) -> None:
        await self.recipients_coll.delete_one({"_id": f"{account_id}:{email}"})

    async def schedule(self, account_id: str) -> ReportSchedule:
        d = await self.schedules.find_one({"_id": account_id})
        if d is None:
            return ReportSchedule(account_id)
        return ReportSchedule(
            account_id,
            bool(d.get("daily_administrative", True)),
            bool(d.get("weekly_executive", True)),
            bool(d.get("monthly_executive", True)),
            str(d.get("time_zone", "")),
        )

    async def set_schedule(self, s: ReportSchedule) -> None:
        await self.schedules.replace_one(
            {"_id": s.account_id},
            {
                "daily_administrative": s.daily_administrative,
                "weekly_executive": s.weekly_executive,
                "monthly_executive": s.monthly_executive,
                "time_zone": s.time_zone,
            },
            upsert=True,
        )

    async def log_maintenance(self) -> LogMaintenance:
        d = await self.settings.find_one({"_id": "log_maintenance"})
        if d is None:
            return LogMaintenance()
        return LogMaintenance(
            int(d["report_retention_days"]), int(d["log_retention_days"]), d.get("updated_at")
        )

    async def set_log_maintenance(self, m: LogMaintenance) -> None:
        await self.settings.replace_one(
            {"_id": "log_maintenance"},
            {
                "report_retention_days": m.report_retention_days,
                "log_retention_days": m.log_retention_days,
                "updated_at": m.updated_at,
            },
            upsert=True,
        )

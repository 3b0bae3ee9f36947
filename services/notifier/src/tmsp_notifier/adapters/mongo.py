"""Mongo repositories in the notifier's own database.

Only single-document atomic operations (FerretDB 1.x has no transactions): inserts that
treat a duplicate key as "already there", and ``find_one_and_update`` with a filter as
compare-and-set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tmsp_common.errors import FailedPrecondition
from tmsp_common.mongo import Document, ensure_indexes
from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import (
    AccountProfile,
    DeliveryRecord,
    DeliveryState,
    Kind,
    KindSettings,
)
from tmsp_notifier.service_layer.ports import DigestItem

INDEXES: dict[str, list[IndexModel]] = {
    "deliveries": [IndexModel([("account_id", ASCENDING), ("created_at", DESCENDING)])],
    "digest_items": [IndexModel([("flushed", ASCENDING), ("window_start", ASCENDING)])],
    "settings": [],
    "accounts": [],
    "throttle": [],
    "alert_state": [],
}


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    await ensure_indexes(db, INDEXES)


_OPEN_STATES = [s.value for s in DeliveryState if not s.final]


def _record(doc: Document) -> DeliveryRecord:
    return DeliveryRecord(
        notification_id=doc["_id"],
        account_id=doc.get("account_id", ""),
        kind=Kind(doc["kind"]),
        recipients=tuple(doc.get("recipients", ())),
        state=DeliveryState(doc["state"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        subject=doc.get("subject", ""),
        attempts=int(doc.get("attempts", 0)),
        last_reply=doc.get("last_reply", ""),
        decision=doc.get("decision", ""),
        window_start=doc.get("window_start"),
        source=doc.get("source", ""),
        source_event_id=doc.get("source_event_id", ""),
        summary=doc.get("summary", ""),
        sent_at=doc.get("sent_at"),
        message_id=doc.get("message_id", ""),
    )


class MongoDeliveryLog:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["deliveries"]

    async def claim(self, record: DeliveryRecord) -> tuple[DeliveryRecord, bool]:
        doc: Document = {
            "_id": record.notification_id,
            "account_id": record.account_id,
            "kind": record.kind.value,
            "recipients": list(record.recipients),
            "state": record.state.value,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "subject": record.subject,
            "attempts": record.attempts,
            "last_reply": record.last_reply,
            "decision": record.decision,
            "window_start": record.window_start,
            "source": record.source,
            "source_event_id": record.source_event_id,
            "summary": record.summary,
            "sent_at": None,
            "message_id": record.message_id,
        }
        try:
            await self._c.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._c.find_one({"_id": record.notification_id})
            if existing is not None:
                return _record(existing), False
            raise
        return record, True

    async def set_decision(
        self, notification_id: str, decision: str, window_start: datetime, now: datetime
    ) -> DeliveryRecord:
        await self._c.update_one(
            {"_id": notification_id, "decision": ""},
            {"$set": {"decision": decision, "window_start": window_start, "updated_at": now}},
        )
        doc = await self._c.find_one({"_id": notification_id})
        assert doc is not None  # noqa: S101 - claimed before
        return _record(doc)

    async def mark_sending(self, notification_id: str, now: datetime) -> DeliveryRecord | None:
        doc = await self._c.find_one_and_update(
            {"_id": notification_id, "state": {"$in": _OPEN_STATES}},
            {
                "$set": {"state": DeliveryState.SENDING.value, "updated_at": now},
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return _record(doc) if doc is not None else None

    async def mark(
        self,
        notification_id: str,
        state: DeliveryState,
        now: datetime,
        *,
        reply: str = "",
        subject: str = "",
    ) -> None:
        update: dict[str, Any] = {"state": state.value, "updated_at": now}
        if reply:
            update["last_reply"] = reply[:1000]
        if subject:
            update["subject"] = subject
        if state == DeliveryState.SENT:
            update["sent_at"] = now
        await self._c.update_one({"_id": notification_id}, {"$set": update})

    async def get(self, notification_id: str) -> DeliveryRecord | None:
        doc = await self._c.find_one({"_id": notification_id})
        return _record(doc) if doc is not None else None

    async def list_for_account(
        self, account_id: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[DeliveryRecord]:
        query: Document = {"account_id": account_id}
        if after is not None:
            at, nid = after
            query["$or"] = [
                {"created_at": {"$lt": at}},
                {"created_at": at, "_id": {"$gt": nid}},
            ]
        cursor = self._c.find(query).sort([("created_at", DESCENDING), ("_id", ASCENDING)])
        return [_record(d) async for d in cursor.limit(limit)]


def _settings_id(account_id: str, kind: Kind) -> str:
    return f"{account_id}/{kind.value}"


class MongoSettings:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["settings"]

    async def get(self, account_id: str, kind: Kind) -> KindSettings | None:
        doc = await self._c.find_one({"_id": _settings_id(account_id, kind)})
        if doc is None:
            return None
        return KindSettings(
            account_id=doc["account_id"],
            kind=Kind(doc["kind"]),
            enabled=bool(doc["enabled"]),
            min_severity=Severity(int(doc["min_severity"])),
            notify_administrator=bool(doc["notify_administrator"]),
            extra_recipients=tuple(doc.get("extra_recipients", ())),
            max_per_hour=int(doc["max_per_hour"]),
            digest=bool(doc["digest"]),
            version=int(doc["version"]),
        )

    async def put(self, settings: KindSettings) -> KindSettings:
        new_version = settings.version + 1
        fields: Document = {
            "account_id": settings.account_id,
            "kind": settings.kind.value,
            "enabled": settings.enabled,
            "min_severity": int(settings.min_severity),
            "notify_administrator": settings.notify_administrator,
            "extra_recipients": list(settings.extra_recipients),
            "max_per_hour": settings.max_per_hour,
            "digest": settings.digest,
            "version": new_version,
        }
        key = _settings_id(settings.account_id, settings.kind)
        if settings.version == 0:
            try:
                await self._c.insert_one({"_id": key, **fields})
            except DuplicateKeyError as exc:
                raise FailedPrecondition("settings changed meanwhile; reload and retry") from exc
        else:
            result = await self._c.update_one(
                {"_id": key, "version": settings.version}, {"$set": fields}
            )
            if result.matched_count != 1:
                raise FailedPrecondition("settings changed meanwhile; reload and retry")
        return replace(settings, version=new_version)


class MongoAccounts:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["accounts"]

    @staticmethod
    def _profile(doc: Document) -> AccountProfile:
        return AccountProfile(
            account_id=doc["_id"],
            name=doc.get("name", ""),
            company_name=doc.get("company_name", ""),
            managed_by_email=doc.get("managed_by_email", ""),
            time_zone=doc.get("time_zone", "UTC") or "UTC",
            valid_until=doc.get("valid_until"),
            deleted=bool(doc.get("deleted", False)),
            version=int(doc.get("version", 0)),
        )

    async def get(self, account_id: str) -> AccountProfile | None:
        doc = await self._c.find_one({"_id": account_id})
        return self._profile(doc) if doc is not None else None

    async def upsert(self, account: AccountProfile) -> bool:
        fields: Document = {
            "name": account.name,
            "company_name": account.company_name,
            "managed_by_email": account.managed_by_email,
            "time_zone": account.time_zone,
            "valid_until": account.valid_until,
            "deleted": account.deleted,
            "version": account.version,
        }
        try:
            await self._c.insert_one({"_id": account.account_id, **fields})
            return True
        except DuplicateKeyError:
            pass
        result = await self._c.update_one(
            {"_id": account.account_id, "version": {"$lt": account.version}}, {"$set": fields}
        )
        return result.matched_count == 1

    async def all(self) -> list[AccountProfile]:
        return [self._profile(d) async for d in self._c.find({"deleted": False})]


class MongoCounter:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["throttle"]

    async def increment(self, account_id: str, kind: Kind, window_start: datetime) -> int:
        key = f"{account_id}/{kind.value}/{window_start.isoformat()}"
        doc = await self._c.find_one_and_update(
            {"_id": key},
            {"$inc": {"count": 1}, "$set": {"window_start": window_start}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # noqa: S101 - upsert returns the document
        return int(doc["count"])


class MongoDigests:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["digest_items"]

    async def add(self, item: DigestItem) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self._c.insert_one(
                {
                    "_id": item.notification_id,
                    "account_id": item.account_id,
                    "kind": item.kind.value,
                    "window_start": item.window_start,
                    "summary": item.summary,
                    "flushed": False,
                }
            )

    async def due(self, now: datetime) -> list[DigestItem]:
        from tmsp_notifier.domain.policy import THROTTLE_WINDOW

        cursor = self._c.find({"flushed": False, "window_start": {"$lte": now - THROTTLE_WINDOW}})
        return [
            DigestItem(d["_id"], d["account_id"], Kind(d["kind"]), d["window_start"], d["summary"])
            async for d in cursor
        ]

    async def mark_flushed(self, notification_ids: Sequence[str]) -> None:
        if notification_ids:
            await self._c.update_many(
                {"_id": {"$in": list(notification_ids)}}, {"$set": {"flushed": True}}
            )


class MongoAlerts:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._c = db["alert_state"]

    async def incident_severity(self, incident_id: str) -> Severity | None:
        doc = await self._c.find_one({"_id": f"incident/{incident_id}"})
        return Severity(int(doc["severity"])) if doc is not None else None

    async def set_incident_severity(self, incident_id: str, severity: Severity) -> None:
        await self._c.update_one(
            {"_id": f"incident/{incident_id}"},
            {"$max": {"severity": int(severity)}},
            upsert=True,
        )

    async def product_state(self, product_id: str) -> str | None:
        doc = await self._c.find_one({"_id": f"product/{product_id}"})
        return str(doc["state"]) if doc is not None else None

    async def set_product_state(self, product_id: str, state: str) -> None:
        await self._c.update_one(
            {"_id": f"product/{product_id}"}, {"$set": {"state": state}}, upsert=True
        )

    async def endpoint_alert(self, key: str) -> tuple[frozenset[str], str] | None:
        doc = await self._c.find_one({"_id": f"endpoint/{key}"})
        if doc is None:
            return None
        return frozenset(doc.get("threats", ())), str(doc.get("reason", ""))

    async def set_endpoint_alert(self, key: str, alert: tuple[frozenset[str], str] | None) -> None:
        if alert is None:
            await self._c.delete_one({"_id": f"endpoint/{key}"})
            return
        threats, reason = alert
        await self._c.update_one(
            {"_id": f"endpoint/{key}"},
            {"$set": {"threats": sorted(threats), "reason": reason}},
            upsert=True,
        )

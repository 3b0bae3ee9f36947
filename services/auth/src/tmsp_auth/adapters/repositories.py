"""MongoDB repositories. Every state change that races is ONE single-document atomic
operation whose filter is the precondition (compare-and-set): failure counting, the TOTP
last-used step, code and token consumption, refresh-token rotation. No transactions (FerretDB
1.x has none), so this works on FerretDB and MongoDB alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tmsp_auth.domain.codes import CodeHasher, CodePurpose, CodeRules
from tmsp_auth.domain.lockout import HOUR, HOURLY_HARD_CAP, LockoutPolicy, LockState
from tmsp_common.errors import AlreadyExists, RateLimited
from tmsp_common.mongo import Document, ensure_indexes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

INDEXES: dict[str, list[IndexModel]] = {
    "users": [
        IndexModel([("email_norm", ASCENDING)], unique=True, name="email_norm_unique"),
        IndexModel([("account_id", ASCENDING)], name="account"),
    ],
    "accounts": [IndexModel([("name_norm", ASCENDING)], unique=True, name="name_norm_unique")],
    "codes": [IndexModel([("expires_at", ASCENDING)], name="expires")],
    "reset_tokens": [IndexModel([("user_id", ASCENDING)], name="user")],
    "challenges": [IndexModel([("expires_at", ASCENDING)], name="expires")],
    "sessions": [IndexModel([("user_id", ASCENDING)], name="user")],
    "signing_keys": [IndexModel([("created_at", ASCENDING)], name="created")],
}


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    await ensure_indexes(db, INDEXES)


def aware(value: Any) -> datetime:
    """Datetimes read back are UTC-aware (the client is tz_aware); tolerate naive ones."""
    if not isinstance(value, datetime):
        return EPOCH
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def lock_state(doc: Document) -> LockState:
    return LockState(
        failures=int(doc.get("failures", 0)),
        locked_until=aware(doc.get("locked_until")),
        lockouts=int(doc.get("lockouts", 0)),
        window_start=aware(doc.get("window_start")),
        window_failures=int(doc.get("window_failures", 0)),
    )


@dataclass(frozen=True)
class Reservation:
    """One attempt reserved against the lockout counters (taken before checking)."""

    attempt: int
    """This attempt's number among the current failures (1..threshold)."""
    lockouts: int
    window_failures: int
    window_start: datetime


class UserRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["users"]

    @staticmethod
    def new_user_fields() -> Document:
        return {
            "disabled": False,
            "password_hash": None,
            "failures": 0,
            "locked_until": EPOCH,
            "lockouts": 0,
            "window_start": EPOCH,
            "window_failures": 0,
            "totp": None,
            "totp_pending": None,
            "totp_last_step": 0,
            "recovery_codes": [],
            "two_factor_prompt": "",
        }

    async def insert(self, doc: Document) -> None:
        try:
            await self.coll.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AlreadyExists("a user with this email already exists") from exc

    async def get(self, user_id: str) -> Document | None:
        return await self.coll.find_one({"_id": user_id})

    async def by_email(self, email_norm: str) -> Document | None:
        return await self.coll.find_one({"email_norm": email_norm})

    async def list_for_account(self, account_id: str) -> list[Document]:
        return [d async for d in self.coll.find({"account_id": account_id}).sort("email_norm")]

    async def set_fields(self, user_id: str, fields: Document) -> bool:
        result = await self.coll.update_one({"_id": user_id}, {"$set": fields})
        return result.matched_count == 1

    async def compare_and_set(self, user_id: str, expect: Document, fields: Document) -> bool:
        """Set ``fields`` only if the user still matches ``expect`` (one atomic update)."""
        result = await self.coll.update_one({"_id": user_id, **expect}, {"$set": fields})
        return result.modified_count == 1

    async def disable_account_users(self, account_id: str) -> None:
        await self.coll.update_many({"account_id": account_id}, {"$set": {"disabled": True}})

    # -- lockout -------------------------------------------------------------------------

    async def reserve_attempt(
        self, user_id: str, policy: LockoutPolicy, now: datetime
    ) -> Reservation | None:
        """Count one attempt as a failure *before* it is checked; None when none is left.

        The filter is the whole precondition (not locked, under the threshold, under the
        hourly cap), so concurrent attempts can never reserve more than the threshold.
        """
        base: Document = {
            "_id": user_id,
            "locked_until": {"$lte": now},
            "failures": {"$lt": policy.effective_threshold},
        }
        hour_ago = now - HOUR
        doc = await self.coll.find_one_and_update(
            {
                **base,
                "window_start": {"$gt": hour_ago},
                "window_failures": {"$lt": HOURLY_HARD_CAP},
            },
            {"$inc": {"failures": 1, "window_failures": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await self.coll.find_one_and_update(
                {**base, "window_start": {"$lte": hour_ago}},
                {"$inc": {"failures": 1}, "$set": {"window_start": now, "window_failures": 1}},
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            return None
        return Reservation(
            attempt=int(doc["failures"]),
            lockouts=int(doc.get("lockouts", 0)),
            window_failures=int(doc.get("window_failures", 0)),
            window_start=aware(doc.get("window_start")),
        )

    async def lock(self, user_id: str, until: datetime) -> None:
        """Start a lockout: the failure count restarts, the lockout counter grows."""
        await self.coll.update_one(
            {"_id": user_id},
            {"$set": {"locked_until": until, "failures": 0}, "$inc": {"lockouts": 1}},
        )

    async def release_attempt(self, user_id: str) -> None:
        """Give back a reservation whose check succeeded but did not complete a login."""
        await self.coll.update_one(
            {"_id": user_id, "failures": {"$gt": 0}}, {"$inc": {"failures": -1}}
        )

    async def clear_failures(self, user_id: str) -> None:
        """A completed login: failures and consecutive lockouts start over."""
        await self.coll.update_one({"_id": user_id}, {"$set": {"failures": 0, "lockouts": 0}})

    async def unlock(self, user_id: str) -> bool:
        result = await self.coll.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "failures": 0,
                    "lockouts": 0,
                    "locked_until": EPOCH,
                    "window_failures": 0,
                }
            },
        )
        return result.matched_count == 1

    # -- TOTP ----------------------------------------------------------------------------

    async def claim_totp_step(self, user_id: str, step: int) -> bool:
        """Compare-and-set: accept ``step`` only if newer than the last step used."""
        result = await self.coll.update_one(
            {"_id": user_id, "totp_last_step": {"$lt": step}},
            {"$set": {"totp_last_step": step}},
        )
        return result.modified_count == 1

    async def consume_recovery_code(self, user_id: str, digest: str) -> bool:
        result = await self.coll.update_one(
            {"_id": user_id, "recovery_codes": digest}, {"$pull": {"recovery_codes": digest}}
        )
        return result.modified_count == 1


class AccountRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["accounts"]

    async def insert(self, doc: Document) -> None:
        try:
            await self.coll.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AlreadyExists("an account with this name already exists") from exc

    async def get(self, account_id: str) -> Document | None:
        return await self.coll.find_one({"_id": account_id, "deleted": False})

    async def get_any(self, account_id: str) -> Document | None:
        return await self.coll.find_one({"_id": account_id})

    async def provider_account(self) -> Document | None:
        return await self.coll.find_one({"provider": True, "deleted": False})

    async def find_all(self, account_id: str | None = None) -> list[Document]:
        query: Document = {"deleted": False}
        if account_id is not None:
            query["_id"] = account_id
        return [d async for d in self.coll.find(query).sort("name_norm")]

    async def all_including_deleted(self) -> list[Document]:
        return [d async for d in self.coll.find({})]

    async def update(self, account_id: str, fields: Document, now: datetime) -> Document | None:
        """Set ``fields`` and bump the version in one atomic update; the new document."""
        try:
            return await self.coll.find_one_and_update(
                {"_id": account_id, "deleted": False},
                {"$set": {**fields, "updated_at": now}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError as exc:
            raise AlreadyExists("an account with this name already exists") from exc


class CodeResult(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    EXPIRED = "expired"


class CodeRepository:
    """Emailed codes: one live code per user and purpose; a new one replaces the old."""

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["codes"]
        self.hasher = hasher

    async def issue(
        self, user_id: str, purpose: CodePurpose, code: str, rules: CodeRules, now: datetime
    ) -> datetime:
        """Store a new code (resend-throttled); returns its expiry. RateLimited if too soon."""
        key = f"{user_id}:{purpose.value}"
        expires = now + rules.ttl
        fields = {
            "user_id": user_id,
            "purpose": purpose.value,
            "digest": self.hasher.digest(code),
            "created_at": now,
            "expires_at": expires,
            "attempts_left": rules.max_attempts,
            "used": False,
        }
        result = await self.coll.update_one(
            {"_id": key, "created_at": {"$lte": now - rules.resend_interval}}, {"$set": fields}
        )
        if result.matched_count == 1:
            return expires
        try:
            await self.coll.insert_one({"_id": key, **fields})
        except DuplicateKeyError:
            existing = await self.coll.find_one({"_id": key})
            wait = rules.resend_interval
            if existing is not None:
                wait = aware(existing.get("created_at")) + rules.resend_interval - now
            raise RateLimited(
                "a code was sent recently; wait before asking again",
                retry_after_seconds=max(1.0, wait.total_seconds()),
            ) from None
        return expires

    async def consume(
        self, user_id: str, purpose: CodePurpose, code: str, now: datetime
    ) -> CodeResult:
        """Spend one attempt, then the code itself if it matches (both compare-and-set)."""
        key = f"{user_id}:{purpose.value}"
        doc = await self.coll.find_one_and_update(
            {"_id": key, "used": False, "attempts_left": {"$gt": 0}},
            {"$inc": {"attempts_left": -1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return CodeResult.INVALID
        if not self.hasher.matches(str(doc["digest"]), code):
            return CodeResult.INVALID
        if aware(doc["expires_at"]) <= now:
            return CodeResult.EXPIRED
        result = await self.coll.update_one(
            {"_id": key, "used": False, "digest": doc["digest"]}, {"$set": {"used": True}}
        )
        return CodeResult.OK if result.modified_count == 1 else CodeResult.INVALID

    async def discard(self, user_id: str, purpose: CodePurpose) -> None:
        await self.coll.delete_one({"_id": f"{user_id}:{purpose.value}"})


class TokenRepository:
    """High-entropy single-use tokens (password reset, invitation), stored by digest."""

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["reset_tokens"]
        self.hasher = hasher

    async def issue(self, user_id: str, token: str, expires_at: datetime) -> None:
        await self.coll.insert_one(
            {
                "_id": self.hasher.digest(token),
                "user_id": user_id,
                "expires_at": expires_at,
                "used": False,
            }
        )

    async def consume(self, token: str, now: datetime) -> str | None:
        """The user id of a live token, which is spent by this call; None otherwise."""
        doc = await self.coll.find_one_and_update(
            {"_id": self.hasher.digest(token), "used": False, "expires_at": {"$gt": now}},
            {"$set": {"used": True}},
        )
        return None if doc is None else str(doc["user_id"])

    async def discard_for_user(self, user_id: str) -> None:
        await self.coll.delete_many({"user_id": user_id})


class ChallengeRepository:
    """Pending second-factor challenges (after a correct password)."""

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["challenges"]
        self.hasher = hasher

    async def create(self, challenge_id: str, user_id: str, expires_at: datetime) -> None:
        await self.coll.insert_one(
            {
                "_id": self.hasher.digest(challenge_id),
                "user_id": user_id,
                "expires_at": expires_at,
                "attempts_left": 5,
                "used": False,
            }
        )

    async def peek(self, challenge_id: str, now: datetime) -> str | None:
        doc = await self.coll.find_one(
            {"_id": self.hasher.digest(challenge_id), "used": False, "expires_at": {"$gt": now}}
        )
        return None if doc is None else str(doc["user_id"])

    async def take_attempt(self, challenge_id: str, now: datetime) -> str | None:
        """Spend one of the challenge's attempts; the user id, or None if it is spent."""
        doc = await self.coll.find_one_and_update(
            {
                "_id": self.hasher.digest(challenge_id),
                "used": False,
                "expires_at": {"$gt": now},
                "attempts_left": {"$gt": 0},
            },
            {"$inc": {"attempts_left": -1}},
        )
        return None if doc is None else str(doc["user_id"])

    async def complete(self, challenge_id: str) -> bool:
        result = await self.coll.update_one(
            {"_id": self.hasher.digest(challenge_id), "used": False}, {"$set": {"used": True}}
        )
        return result.modified_count == 1


class RefreshOutcome(StrEnum):
    ROTATED = "rotated"
    REUSED = "reused"
    INVALID = "invalid"


class SessionRepository:
    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["sessions"]
        self.hasher = hasher

    async def create(self, doc: Document, refresh_token: str) -> None:
        await self.coll.insert_one(
            {
                **doc,
                "refresh_digest": self.hasher.digest(refresh_token),
                "previous_digests": [],
                "revoked": False,
            }
        )

    async def get(self, session_id: str) -> Document | None:
        return await self.coll.find_one({"_id": session_id})

    async def is_active(self, session_id: str, now: datetime) -> bool:
        doc = await self.coll.find_one(
            {"_id": session_id, "revoked": False, "expires_at": {"$gt": now}}, {"_id": 1}
        )
        return doc is not None

    async def rotate(
        self, session_id: str, presented: str, new_token: str, now: datetime
    ) -> tuple[RefreshOutcome, Document | None]:
        """Compare-and-set the refresh digest; a spent token revokes the session."""
        digest = self.hasher.digest(presented)
        doc = await self.coll.find_one_and_update(
            {
                "_id": session_id,
                "refresh_digest": digest,
                "revoked": False,
                "expires_at": {"$gt": now},
            },
            {
                "$set": {"refresh_digest": self.hasher.digest(new_token), "refreshed_at": now},
                "$push": {"previous_digests": digest},
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return RefreshOutcome.ROTATED, doc
        reused = await self.coll.find_one_and_update(
            {"_id": session_id, "previous_digests": digest},
            {"$set": {"revoked": True, "revoked_reason": "refresh token reused"}},
        )
        if reused is not None:
            return RefreshOutcome.REUSED, reused
        return RefreshOutcome.INVALID, None

    async def revoke(self, session_id: str, reason: str) -> None:
        await self.coll.update_one(
            {"_id": session_id}, {"$set": {"revoked": True, "revoked_reason": reason}}
        )

    async def revoke_user(self, user_id: str, reason: str, keep: str = "") -> None:
        query: Document = {"user_id": user_id, "revoked": False}
        if keep:
            query["_id"] = {"$ne": keep}
        await self.coll.update_many(query, {"$set": {"revoked": True, "revoked_reason": reason}})

    async def revoke_account(self, account_id: str, reason: str) -> None:
        await self.coll.update_many(
            {"account_id": account_id, "revoked": False},
            {"$set": {"revoked": True, "revoked_reason": reason}},
        )


class SigningKeyRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["signing_keys"]

    async def insert(self, doc: Document) -> None:
        await self.coll.insert_one(doc)

    async def recent(self, since: datetime) -> list[Document]:
        return [
            d async for d in self.coll.find({"created_at": {"$gt": since}}).sort("created_at", -1)
        ]


def expiry(now: datetime, minutes: float) -> datetime:
    return now + timedelta(minutes=minutes)

"""MongoDB repositories.

Every state change that races is decided by ONE atomic primitive: inserting a document with
a unique ``_id`` into the ``markers`` collection (a *claim*). Only one of any number of
concurrent inserts of the same ``_id`` succeeds, on MongoDB and on FerretDB 1.24 alike.
Conditional updates are not enough: FerretDB 1.24 (SQLite) evaluates the filter of
``findAndModify``/``update`` and writes the document back without isolation, so 50
concurrent ``find_one_and_update({"n": {"$lt": 5}}, {"$inc": {"n": 1}})`` all "win"
(measured). Claims decide: lockout attempt slots, TOTP time steps, code attempts and
consumption, reset tokens, challenges, refresh-token rotation, recovery codes. Frequently
written state lives outside the user document (``lockouts``, ``totp_steps``), so a
whole-document write-back cannot undo it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from tmsp_auth.domain.codes import CodeHasher, CodePurpose, CodeRules
from tmsp_auth.domain.lockout import HOUR, HOURLY_HARD_CAP, LockoutPolicy, LockState
from tmsp_common.errors import AlreadyExists, RateLimited
from tmsp_common.mongo import Document, ensure_indexes, insert_many_idempotent

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
    "markers": [
        IndexModel([("user_id", ASCENDING), ("kind", ASCENDING), ("at", ASCENDING)], name="uka"),
        IndexModel([("group", ASCENDING)], name="group"),
    ],
    "security_events": [
        IndexModel(
            [("account_id", ASCENDING), ("occurred_at", DESCENDING), ("_id", DESCENDING)],
            name="account_time",
        ),
        IndexModel([("occurred_at", ASCENDING)], name="time"),
    ],
}


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    """Create auth's missing indexes (``tmsp_common.mongo.ensure_indexes``)."""
    await ensure_indexes(db, INDEXES)


def aware(value: Any) -> datetime:
    """Datetimes read back are UTC-aware (the client is tz_aware); tolerate naive ones."""
    if not isinstance(value, datetime):
        return EPOCH
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def lock_state(doc: Document | None, window_failures: int = 0, now: datetime = EPOCH) -> LockState:
    doc = doc or {}
    return LockState(
        locked_until=aware(doc.get("locked_until")),
        lockouts=int(doc.get("lockouts", 0)),
        window_start=now - HOUR if window_failures else None,
        window_failures=window_failures,
    )


@dataclass(frozen=True)
class Reservation:
    """One attempt reserved against the lockout counters (taken before checking)."""

    attempt: int
    """This attempt's slot among the current epoch's failures (1..threshold)."""
    lockouts: int
    window_failures: int
    key: str
    epoch: int


class Markers:
    """Claims: inserting a unique ``_id`` is the one atomic decision (see module doc)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["markers"]

    async def claim(
        self, key: str, *, user_id: str = "", kind: str = "", group: str = "", at: datetime = EPOCH
    ) -> bool:
        try:
            await self.coll.insert_one(
                {"_id": key, "user_id": user_id, "kind": kind, "group": group, "at": at}
            )
        except DuplicateKeyError:
            return False
        return True

    async def exists(self, key: str) -> bool:
        return await self.coll.find_one({"_id": key}, {"_id": 1}) is not None

    async def drop(self, key: str) -> None:
        await self.coll.delete_one({"_id": key})

    async def count(self, query: Document) -> int:
        return await self.coll.count_documents(query)

    async def newest(self, group: str) -> datetime | None:
        """When the latest claim of ``group`` was made; None when it has none."""
        doc = await self.coll.find_one({"group": group}, {"at": 1}, sort=[("at", DESCENDING)])
        return None if doc is None else aware(doc.get("at"))

    async def claim_slot(
        self,
        prefix: str,
        limit: int,
        *,
        group: str,
        user_id: str = "",
        kind: str = "",
        at: datetime = EPOCH,
    ) -> tuple[int, str] | None:
        """Claim the first free slot ``prefix:1..limit`` of ``group``; None when all are taken."""
        start = await self.count({"group": group}) + 1
        for n in range(max(1, start), limit + 1):
            key = f"{prefix}:{n}"
            if await self.claim(key, user_id=user_id, kind=kind, group=group, at=at):
                return n, key
        return None


class UserRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["users"]
        self.lockouts = db["lockouts"]
        self.totp_steps = db["totp_steps"]
        self.markers = Markers(db)

    @staticmethod
    def new_user_fields() -> Document:
        return {
            "disabled": False,
            "password_hash": None,
            "totp": None,
            "totp_pending": None,
            "recovery_codes": [],
            "recovery_set": "",
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
        """The user who signs in with this address (never a held one: see ``held_fields``)."""
        return await self.coll.find_one({"email_norm": email_norm})

    async def in_account_with_email(self, account_id: str, email_norm: str) -> Document | None:
        """A user of ``account_id`` with this address, signing in with it or held (a held
        user keeps the address in ``email_key``)."""
        return await self.coll.find_one(
            {
                "account_id": account_id,
                "$or": [{"email_norm": email_norm}, {"email_key": email_norm}],
            }
        )

    @staticmethod
    def held_fields(user_id: str, email_norm: str) -> Document:
        """A user whose address already signs in to a user of another account: stored (its
        account sees it as invited) but it can never sign in, and no link is ever sent for
        it. ``email_norm`` must stay unique, so it holds a placeholder that is no address;
        the address is kept in ``email_key``."""
        return {"email_norm": f"held:{user_id}", "email_key": email_norm, "email_held": True}

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

    # -- lockout (state in ``lockouts``, attempt slots as claims) -------------------------

    async def lockout(self, user_id: str) -> Document | None:
        return await self.lockouts.find_one({"_id": user_id})

    async def lockouts_of(self, user_ids: list[str]) -> dict[str, Document]:
        return {str(d["_id"]): d async for d in self.lockouts.find({"_id": {"$in": user_ids}})}

    async def failures_last_hour(self, user_id: str, now: datetime) -> int:
        return await self.markers.count(
            {"user_id": user_id, "kind": "attempt", "at": {"$gt": now - HOUR}}
        )

    async def reserve_attempt(
        self, user_id: str, policy: LockoutPolicy, now: datetime
    ) -> Reservation | None:
        """Count one attempt as a failure *before* it is checked; None when none is left.

        The attempt takes one of ``threshold`` slots of the current epoch by a claim, so
        concurrent attempts can never get more checks than the threshold. The hourly hard
        cap is a count (it can be exceeded by at most the number of in-flight attempts).
        Slots nobody settled (their process died) count as failures once the newest is
        older than the lease: the epoch is then locked as its last attempt would have.
        """
        for _ in range(2):
            found, window = await asyncio.gather(
                self.lockout(user_id), self.failures_last_hour(user_id, now)
            )
            state = found or {}
            if aware(state.get("locked_until")) > now or window >= HOURLY_HARD_CAP:
                return None
            epoch, lockouts = int(state.get("epoch", 0)), int(state.get("lockouts", 0))
            group = f"attempt:{user_id}:{epoch}"
            slot = await self.markers.claim_slot(
                group,
                policy.effective_threshold,
                group=group,
                user_id=user_id,
                kind="attempt",
                at=now,
            )
            if slot is not None:
                return Reservation(
                    attempt=slot[0],
                    lockouts=lockouts,
                    window_failures=window + 1,
                    key=slot[1],
                    epoch=epoch,
                )
            newest = await self.markers.newest(group)
            if newest is None or now - newest < policy.attempt_lease:
                return None  # the last attempts may still be in flight
            await self.lock(user_id, newest + policy.lock_period(lockouts), epoch, lockouts)
        return None

    async def lock(self, user_id: str, until: datetime, epoch: int, lockouts: int) -> None:
        """Lock ``epoch``: a new epoch (fresh slots once it ends), one more lockout.

        Idempotent (values, no increments), so a late holder of the last slot and the
        lease's recovery of the same epoch agree.
        """
        await self.lockouts.update_one(
            {"_id": user_id},
            {"$set": {"locked_until": until, "epoch": epoch + 1, "lockouts": lockouts + 1}},
            upsert=True,
        )

    async def release_attempt(self, reservation: Reservation) -> None:
        """Give back a reservation whose check succeeded but did not complete a login."""
        await self.markers.drop(reservation.key)

    async def clear_failures(self, user_id: str, reservation: Reservation) -> None:
        """A completed login: failures and consecutive lockouts start over (new epoch)."""
        await asyncio.gather(
            self.markers.drop(reservation.key),
            self.lockouts.update_one(
                {"_id": user_id},
                {"$set": {"lockouts": 0, "epoch": reservation.epoch + 1}},
                upsert=True,
            ),
        )

    async def unlock(self, user_id: str) -> None:
        state = await self.lockout(user_id) or {}
        await self.lockouts.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "locked_until": EPOCH,
                    "lockouts": 0,
                    "epoch": int(state.get("epoch", 0)) + 1,
                }
            },
            upsert=True,
        )
        await self.markers.coll.delete_many({"user_id": user_id, "kind": "attempt"})

    # -- TOTP ----------------------------------------------------------------------------

    async def claim_totp_step(self, user_id: str, step: int, now: datetime) -> bool:
        """Accept ``step`` once: newer than the last step used, and claimed (atomic)."""
        last = await self.totp_steps.find_one({"_id": user_id})
        if last is not None and int(last.get("step", 0)) >= step:
            return False
        if not await self.markers.claim(
            f"totp:{user_id}:{step}", user_id=user_id, kind="totp", at=now
        ):
            return False
        await self.totp_steps.update_one({"_id": user_id}, {"$max": {"step": step}}, upsert=True)
        return True

    async def consume_recovery_code(self, user: Document, digest: str, now: datetime) -> bool:
        if digest not in user.get("recovery_codes", []):
            return False
        group = f"recovery:{user['_id']}:{user.get('recovery_set', '')}"
        return await self.markers.claim(
            f"{group}:{digest}", user_id=str(user["_id"]), kind="recovery", group=group, at=now
        )

    async def recovery_codes_left(self, user: Document) -> int:
        group = f"recovery:{user['_id']}:{user.get('recovery_set', '')}"
        return len(user.get("recovery_codes", [])) - await self.markers.count({"group": group})


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


class SecurityEventRepository:
    """The audit events of accounts' users, stored from auth's own audit topic (the
    topic is the record; this is the portal's view of it, kept ``retention`` long)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.coll = db["security_events"]

    async def add_many(self, docs: list[Document]) -> None:
        """Insert each once (``_id`` is the event id: a replay stores nothing twice)."""
        await insert_many_idempotent(self.coll, docs)

    async def page(
        self,
        account_id: str,
        *,
        user_id: str,
        kinds: list[int],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Document]:
        """Newest first, by (occurred_at, _id), after the last item of the previous page."""
        query: Document = {"account_id": account_id}
        if user_id:
            query["user_id"] = user_id
        if kinds:
            query["kind"] = {"$in": kinds}
        if after is not None:
            at, last_id = after
            query["$or"] = [
                {"occurred_at": {"$lt": at}},
                {"occurred_at": at, "_id": {"$lt": last_id}},
            ]
        cursor = self.coll.find(query).sort([("occurred_at", DESCENDING), ("_id", DESCENDING)])
        return [d async for d in cursor.limit(limit)]

    async def purge(self, before: datetime) -> int:
        result = await self.coll.delete_many({"occurred_at": {"$lt": before}})
        return int(result.deleted_count)


class CodeResult(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    EXPIRED = "expired"


class CodeRepository:
    """Emailed codes: one live code per user and purpose; a new one replaces the old.

    Each issued code has an ``issue_id``; its attempts and its use are claims under it.
    """

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["codes"]
        self.hasher = hasher
        self.markers = Markers(db)

    async def issue(
        self, user_id: str, purpose: CodePurpose, code: str, rules: CodeRules, now: datetime
    ) -> datetime:
        """Store a new code (resend-throttled); returns its expiry. RateLimited if too soon."""
        key = f"{user_id}:{purpose.value}"
        existing = await self.coll.find_one({"_id": key})
        if existing is not None:
            wait = aware(existing.get("created_at")) + rules.resend_interval - now
            if wait.total_seconds() > 0:
                raise RateLimited(
                    "a code was sent recently; wait before asking again",
                    retry_after_seconds=max(1.0, wait.total_seconds()),
                )
        # One send per resend interval, decided by a claim (concurrent requests included).
        bucket = int(now.timestamp() // max(1.0, rules.resend_interval.total_seconds()))
        if not await self.markers.claim(
            f"send:{key}:{bucket}", user_id=user_id, kind="send", at=now
        ):
            raise RateLimited(
                "a code was sent recently; wait before asking again",
                retry_after_seconds=max(1.0, rules.resend_interval.total_seconds()),
            )
        expires = now + rules.ttl
        await self.coll.replace_one(
            {"_id": key},
            {
                "_id": key,
                "user_id": user_id,
                "purpose": purpose.value,
                "issue_id": uuid.uuid4().hex,
                "digest": self.hasher.digest(code),
                "created_at": now,
                "expires_at": expires,
                "max_attempts": rules.max_attempts,
            },
            upsert=True,
        )
        return expires

    async def consume(
        self, user_id: str, purpose: CodePurpose, code: str, now: datetime
    ) -> CodeResult:
        """Spend one attempt, then the code itself if it matches (both claims)."""
        doc = await self.coll.find_one({"_id": f"{user_id}:{purpose.value}"})
        if doc is None:
            return CodeResult.INVALID
        issue = str(doc["issue_id"])
        slot = await self.markers.claim_slot(
            f"code-attempt:{issue}",
            int(doc.get("max_attempts", 5)),
            group=f"code-attempt:{issue}",
            user_id=user_id,
            kind="code-attempt",
            at=now,
        )
        if slot is None or not self.hasher.matches(str(doc["digest"]), code):
            return CodeResult.INVALID
        if aware(doc["expires_at"]) <= now:
            return CodeResult.EXPIRED
        used = await self.markers.claim(
            f"code-used:{issue}", user_id=user_id, kind="code-used", at=now
        )
        return CodeResult.OK if used else CodeResult.INVALID


async def _live_owner(
    coll: AsyncCollection[Document], markers: Markers, digest: str, spent: str, now: datetime
) -> str | None:
    """The ``user_id`` of document ``digest`` if it has not expired and claim ``spent`` is
    not taken; None otherwise."""
    doc = await coll.find_one({"_id": digest, "expires_at": {"$gt": now}})
    if doc is None or await markers.exists(spent):
        return None
    return str(doc["user_id"])


class TokenRepository:
    """High-entropy single-use tokens (password reset, invitation), stored by digest."""

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["reset_tokens"]
        self.hasher = hasher
        self.markers = Markers(db)

    async def issue(self, user_id: str, token: str, expires_at: datetime) -> None:
        await self.coll.insert_one(
            {"_id": self.hasher.digest(token), "user_id": user_id, "expires_at": expires_at}
        )

    async def peek(self, token: str, now: datetime) -> str | None:
        """The user id of a live, unspent token; nothing is spent."""
        digest = self.hasher.digest(token)
        return await _live_owner(self.coll, self.markers, digest, f"reset:{digest}", now)

    async def spend(self, token: str, now: datetime) -> bool:
        """Spend a token :meth:`peek` found live; False if another call spent it first."""
        digest = self.hasher.digest(token)
        return await self.markers.claim(f"reset:{digest}", kind="reset", at=now)

    async def discard_for_user(self, user_id: str) -> None:
        await self.coll.delete_many({"user_id": user_id})


class ChallengeRepository:
    """Pending second-factor challenges (after a correct password)."""

    MAX_ATTEMPTS = 5

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["challenges"]
        self.hasher = hasher
        self.markers = Markers(db)

    async def create(self, challenge_id: str, user_id: str, expires_at: datetime) -> None:
        await self.coll.insert_one(
            {
                "_id": self.hasher.digest(challenge_id),
                "user_id": user_id,
                "expires_at": expires_at,
            }
        )

    async def peek(self, challenge_id: str, now: datetime) -> str | None:
        digest = self.hasher.digest(challenge_id)
        return await _live_owner(self.coll, self.markers, digest, f"challenge-done:{digest}", now)

    async def take_attempt(self, challenge_id: str, now: datetime) -> str | None:
        """Spend one of the challenge's attempts; the user id, or None if it is spent."""
        user_id = await self.peek(challenge_id, now)
        if user_id is None:
            return None
        digest = self.hasher.digest(challenge_id)
        slot = await self.markers.claim_slot(
            f"challenge-attempt:{digest}",
            self.MAX_ATTEMPTS,
            group=f"challenge-attempt:{digest}",
            kind="challenge-attempt",
            at=now,
        )
        return None if slot is None else user_id

    async def complete(self, challenge_id: str) -> bool:
        digest = self.hasher.digest(challenge_id)
        return await self.markers.claim(f"challenge-done:{digest}", kind="challenge-done")


class RefreshOutcome(StrEnum):
    ROTATED = "rotated"
    REUSED = "reused"
    INVALID = "invalid"


class SessionRepository:
    """Sessions; rotation and revocation are claims (``refresh:<digest>``, ``revoked:<sid>``)."""

    def __init__(self, db: AsyncDatabase[Document], hasher: CodeHasher) -> None:
        self.coll = db["sessions"]
        self.hasher = hasher
        self.markers = Markers(db)

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
        return doc is not None and not await self.markers.exists(f"revoked:{session_id}")

    async def rotate(
        self, session_id: str, presented: str, new_token: str, now: datetime
    ) -> tuple[RefreshOutcome, Document | None]:
        """Spend the presented refresh token (a claim); a spent one revokes the session."""
        digest = self.hasher.digest(presented)
        doc = await self.coll.find_one({"_id": session_id})
        if doc is None:
            return RefreshOutcome.INVALID, None
        current = self.hasher.matches(str(doc.get("refresh_digest", "")), presented)
        if not current and digest not in doc.get("previous_digests", []):
            return RefreshOutcome.INVALID, None
        if current and not await self.is_active(session_id, now):
            return RefreshOutcome.INVALID, None
        if current and await self.markers.claim(
            f"refresh:{digest}", user_id=str(doc["user_id"]), kind="refresh", at=now
        ):
            new_digest = self.hasher.digest(new_token)
            await self.coll.update_one(
                {"_id": session_id},
                {
                    "$set": {"refresh_digest": new_digest, "refreshed_at": now},
                    "$push": {"previous_digests": digest},
                },
            )
            return RefreshOutcome.ROTATED, {**doc, "refresh_digest": new_digest}
        await self.revoke(session_id, "refresh token reused")
        return RefreshOutcome.REUSED, doc

    async def revoke(self, session_id: str, reason: str) -> None:
        await self.markers.claim(f"revoked:{session_id}", kind="revoked")
        await self.coll.update_one(
            {"_id": session_id}, {"$set": {"revoked": True, "revoked_reason": reason}}
        )

    async def revoke_user(self, user_id: str, reason: str, keep: str = "") -> None:
        query: Document = {"user_id": user_id, "revoked": False}
        if keep:
            query["_id"] = {"$ne": keep}
        for doc in [d async for d in self.coll.find(query, {"_id": 1})]:
            await self.revoke(str(doc["_id"]), reason)

    async def revoke_account(self, account_id: str, reason: str) -> None:
        query: Document = {"account_id": account_id, "revoked": False}
        for doc in [d async for d in self.coll.find(query, {"_id": 1})]:
            await self.revoke(str(doc["_id"]), reason)


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

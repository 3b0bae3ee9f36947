"""The custom cleanup pattern catalogue (seed: "manage patterns used for custom cleanup"):
the provider's operators put and remove an account's patterns; each change is stored, then
published on the cleanup-patterns topic the log server serves them from, and answered only
once the broker acknowledged it. A put or removal whose publication failed (UNAVAILABLE) is
stored but not published: the caller's repeat publishes the stored version again instead of
making a new one, and so does the reporter by itself (:meth:`CleanupPatterns.republish`, at
start-up and every ``PATTERN_REPUBLISH_INTERVAL_S``) when nobody repeats it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import CLEANUP_PATTERNS
from tmsp_common.logging import get_logger
from tmsp_reporter.domain.patterns import (
    MAX_PATTERNS,
    CleanupPatternEntry,
    next_version,
    pattern_content,
    pattern_description,
    pattern_name,
    sha256_hex,
)
from tmsp_reporter.service_layer.ports import Accounts, PatternRepository, Publisher

log = get_logger(__name__)


def snapshot(entry: CleanupPatternEntry, content: bytes) -> status_pb2.CleanupPattern:
    msg = status_pb2.CleanupPattern(
        account_id=entry.account_id,
        name=entry.name,
        description=entry.description,
        content=content,
        content_sha256=entry.content_sha256,
        size=entry.size,
        updated_by_user_id=entry.updated_by_user_id,
        version=entry.version,
        deleted=entry.deleted,
    )
    msg.updated_at.CopyFrom(to_timestamp(entry.updated_at))
    return msg


class CleanupPatterns:
    def __init__(
        self,
        store: PatternRepository,
        accounts: Accounts,
        publisher: Publisher,
        clock: Clock,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.publisher = publisher
        self.clock = clock

    def _now(self) -> datetime:
        """The clock's time as stored (BSON dates hold milliseconds), so the answer, the
        stored entry and what a retry publishes again agree."""
        now = self.clock.now()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    async def put(
        self,
        account_id: str,
        name: str,
        description: str,
        content: bytes,
        expected_version: int | None,
        updated_by: str,
    ) -> CleanupPatternEntry:
        """Add or replace a pattern and return it as published.

        Raises InvalidArgument (name, description, content), NotFound for an account the read
        model does not know, FailedPrecondition for a deleted account, a version other than
        ``expected_version`` (0: only if absent), a 101st pattern or a concurrent change,
        Unavailable when the bus did not take it (the stored version is published by the
        caller's retry). The same content and description again changes nothing.
        """
        name = pattern_name(name)
        description = pattern_description(description)
        content = pattern_content(content)
        account = await self.accounts.account(account_id)
        if account is None:
            raise NotFound("account not found")
        if account.deleted:
            raise FailedPrecondition("the account is deleted")
        found = await self.store.get(account_id, name)
        stored = found[0] if found else None
        digest = sha256_hex(content)
        version = next_version(stored, description, digest, expected_version)
        if version is None:
            assert found is not None  # noqa: S101 - next_version returns None only for one
            return await self._publish(*found)
        if (stored is None or stored.deleted) and len(
            await self.store.list(account_id)
        ) >= MAX_PATTERNS:
            raise FailedPrecondition(f"at most {MAX_PATTERNS} cleanup patterns per account")
        entry = CleanupPatternEntry(
            account_id=account_id,
            name=name,
            description=description,
            content_sha256=digest,
            size=len(content),
            version=version,
            updated_at=self._now(),
            updated_by_user_id=updated_by,
        )
        await self.store.save(entry, content, stored.version if stored else 0)
        return await self._publish(entry, content)

    async def delete(self, account_id: str, name: str, deleted_by: str) -> None:
        """Remove a pattern: its tombstone (deleted, no content, next version) is published.

        NotFound for a name not in the catalogue; Unavailable as for :meth:`put` (a retry
        publishes the stored tombstone)."""
        name = pattern_name(name)
        found = await self.store.get(account_id, name)
        if found is None or (found[0].deleted and found[0].published):
            raise NotFound("cleanup pattern not found")
        stored = found[0]
        if stored.deleted:
            await self._publish(stored, b"")
            return
        tombstone = replace(
            stored,
            description="",
            content_sha256="",
            size=0,
            version=stored.version + 1,
            updated_at=self._now(),
            updated_by_user_id=deleted_by,
            deleted=True,
            published=False,
        )
        await self.store.save(tombstone, b"", stored.version)
        await self._publish(tombstone, b"")

    async def list(self, account_id: str) -> list[CleanupPatternEntry]:
        return await self.store.list(account_id)

    async def for_task(self, account_id: str, name: str) -> CleanupPatternEntry:
        """The published pattern a custom cleanup task names; FailedPrecondition otherwise."""
        try:
            found = await self.store.get(account_id, pattern_name(name))
        except InvalidArgument:
            found = None
        if found is None or found[0].deleted:
            raise FailedPrecondition(
                f"no cleanup pattern {name[:64]!r} in the account's catalogue; put it first"
            )
        if not found[0].published:
            raise FailedPrecondition(
                f"cleanup pattern {name!r} is not on the log server yet (it is published "
                "again shortly); retry, or put it again"
            )
        return found[0]

    async def republish(self) -> int:
        """Publish every stored change whose publication failed (a put or removal answered
        UNAVAILABLE and not repeated); returns how many were published. The log server
        keeps the highest version of each pattern, so publishing one that a newer change
        has overtaken meanwhile does no harm."""
        done = 0
        for entry, content in await self.store.unpublished():
            await self._publish(entry, content)
            done += 1
        if done:
            log.info("unpublished cleanup pattern changes published", count=done)
        return done

    async def _publish(self, entry: CleanupPatternEntry, content: bytes) -> CleanupPatternEntry:
        await self.publisher.publish(
            CLEANUP_PATTERNS,
            snapshot(entry, content),
            key=entry.key,
            account_id=entry.account_id,
            occurred_at=entry.updated_at,
            event_id=f"cleanup-pattern:{entry.key}:{entry.version}",
        )
        if not entry.published:
            await self.store.mark_published(entry)
        log.info(
            "cleanup pattern published",
            account_id=entry.account_id,
            name=entry.name,
            version=entry.version,
            size=entry.size,
            deleted=entry.deleted,
        )
        return replace(entry, published=True)

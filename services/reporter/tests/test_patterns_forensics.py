"""The cleanup pattern catalogue (validation, versions, the use case with fakes: a retry after
the bus was unavailable publishes the stored version again) and forensic data chunks
(which can be stored, when a file is complete). On the real broker, FerretDB and gRPC:
tests/integration/test_reporter_patterns_forensics.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import FakeClock
from tmsp_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from tmsp_common.forensics import ForensicFile
from tmsp_common.kafka.topics import CLEANUP_PATTERNS, Topic
from tmsp_reporter.domain.forensics import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_FILE_BYTES,
    InvalidChunk,
    all_received,
    check_agrees,
    check_chunk,
    verified,
)
from tmsp_reporter.domain.model import AccountRow
from tmsp_reporter.domain.patterns import (
    MAX_PATTERN_BYTES,
    MAX_PATTERNS,
    CleanupPatternEntry,
    next_version,
    pattern_content,
    pattern_description,
    pattern_name,
)
from tmsp_reporter.service_layer.patterns import CleanupPatterns

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SHA = hashlib.sha256(b"x").hexdigest()


def test_pattern_names() -> None:
    for good in ["a", "9", "emotet-cleanup-2026.12", "A_b.c-d", "x" * 64]:
        assert pattern_name(good) == good
    for bad in ["", "-a", ".hidden", "_a", "a/b", "a b", "x" * 65, "../etc", "a\n", "é"]:
        with pytest.raises(InvalidArgument) as err:
            pattern_name(bad)
        assert err.value.field == "name"


@given(st.text(max_size=80))
def test_a_pattern_name_is_accepted_as_is_or_refused_naming_the_field(raw: str) -> None:
    try:
        assert pattern_name(raw) == raw
    except InvalidArgument as err:
        assert err.field == "name"
    else:
        assert 1 <= len(raw) <= 64 and raw[0].isascii() and raw[0].isalnum()


def test_descriptions_and_content() -> None:
    assert pattern_description("  removes droppers  ") == "removes droppers"
    assert pattern_description("x" * 500) == "x" * 500
    for bad, why in [("x" * 501, "500"), ("a\nb", "control"), ("esc\x1b[31m", "control")]:
        with pytest.raises(InvalidArgument, match=why) as err:
            pattern_description(bad)
        assert err.value.field == "description"
    assert pattern_content(b"x" * MAX_PATTERN_BYTES) == b"x" * MAX_PATTERN_BYTES
    for bad in [b"", b"x" * (MAX_PATTERN_BYTES + 1)]:
        with pytest.raises(InvalidArgument) as err:
            pattern_content(bad)
        assert err.value.field == "content"


def entry(version: int, *, deleted: bool = False, description: str = "d") -> CleanupPatternEntry:
    return CleanupPatternEntry(
        "acct-a", "p", description, "" if deleted else SHA, 1, version, T0, "u", deleted, True
    )


def test_versions_grow_by_one_and_expected_version_is_checked() -> None:
    assert next_version(None, "d", SHA, None) == 1
    assert next_version(None, "d", SHA, 0) == 1
    with pytest.raises(FailedPrecondition, match="does not exist"):
        next_version(None, "d", SHA, 3)
    assert next_version(entry(2), "other", SHA, None) == 3
    assert next_version(entry(2), "d", "f" * 64, 2) == 3
    for stale in (0, 1, 3):
        with pytest.raises(FailedPrecondition, match="version 2"):
            next_version(entry(2), "d", "f" * 64, stale)
    # the same content and description: nothing to change (a retry), whatever was expected
    assert next_version(entry(2), "d", SHA, None) is None
    assert next_version(entry(2), "d", SHA, 1) is None
    # after a removal the name is free again and the version goes on
    assert next_version(entry(3, deleted=True), "d", SHA, 0) == 4
    with pytest.raises(FailedPrecondition):
        next_version(entry(3, deleted=True), "d", SHA, 3)


class FakeStore:
    def __init__(self) -> None:
        self.docs: dict[str, tuple[CleanupPatternEntry, bytes]] = {}

    async def get(self, account_id: str, name: str) -> tuple[CleanupPatternEntry, bytes] | None:
        return self.docs.get(f"{account_id}/{name}")

    async def save(self, entry: CleanupPatternEntry, content: bytes, previous: int) -> None:
        stored = self.docs.get(entry.key)
        if (stored[0].version if stored else 0) != previous:
            raise FailedPrecondition("changed meanwhile")
        self.docs[entry.key] = (entry, content)

    async def mark_published(self, entry: CleanupPatternEntry) -> None:
        stored, content = self.docs[entry.key]
        if stored.version == entry.version:
            self.docs[entry.key] = (replace(stored, published=True), content)

    async def unpublished(self) -> list[tuple[CleanupPatternEntry, bytes]]:
        return [(e, c) for e, c in self.docs.values() if not e.published]

    async def list(self, account_id: str) -> list[CleanupPatternEntry]:
        rows = [e for e, _ in self.docs.values() if e.account_id == account_id and not e.deleted]
        return sorted(rows, key=lambda e: e.name)


class FakeAccounts:
    def __init__(self, **deleted: bool) -> None:
        self.deleted = deleted

    async def account(self, account_id: str) -> AccountRow | None:
        if account_id not in self.deleted:
            return None
        return AccountRow(
            account_id, account_id, "", (), "", None, None, "", self.deleted[account_id]
        )


class FlakyPublisher:
    """Refuses the next ``failures`` publications (the broker unreachable), then takes them."""

    def __init__(self) -> None:
        self.failures = 0
        self.sent: list[tuple[Topic, Message, str, dict[str, Any]]] = []

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("the event bus did not take it; try again")
        self.sent.append((topic, payload, key, kw))


def catalogue() -> tuple[CleanupPatterns, FakeStore, FlakyPublisher, FakeClock]:
    store, publisher, clock = FakeStore(), FlakyPublisher(), FakeClock(T0)
    accounts = FakeAccounts(**{"acct-a": False, "acct-gone": True})
    return CleanupPatterns(store, accounts, publisher, clock), store, publisher, clock


async def test_a_put_is_published_and_a_retry_after_an_outage_publishes_the_stored_version() -> (
    None
):
    patterns, store, publisher, clock = catalogue()
    content = b"kill_process: svch0st.exe\n"
    publisher.failures = 1
    with pytest.raises(Unavailable):
        await patterns.put("acct-a", "emotet", "Emotet", content, 0, "op-1")
    stored, _ = store.docs["acct-a/emotet"]
    assert (stored.version, stored.published) == (1, False)
    # not on the log server yet: a task may not name it
    with pytest.raises(FailedPrecondition, match="not on the log server"):
        await patterns.for_task("acct-a", "emotet")

    clock.advance(timedelta(minutes=1))
    got = await patterns.put("acct-a", "emotet", "Emotet", content, 0, "op-1")
    assert (got.version, got.published, got.updated_at) == (1, True, T0)
    (topic, snap, key, kw) = publisher.sent[0]
    assert topic is CLEANUP_PATTERNS and key == "acct-a/emotet"
    assert isinstance(snap, status_pb2.CleanupPattern)
    assert (snap.content, snap.size, snap.version) == (content, len(content), 1)
    assert snap.content_sha256 == hashlib.sha256(content).hexdigest()
    assert kw["event_id"] == "cleanup-pattern:acct-a/emotet:1"
    assert (await patterns.for_task("acct-a", "emotet")).version == 1

    changed = await patterns.put("acct-a", "emotet", "Emotet v2", content + b"x", 1, "op-2")
    assert (changed.version, changed.updated_by_user_id) == (2, "op-2")
    with pytest.raises(FailedPrecondition, match="version 2"):
        await patterns.put("acct-a", "emotet", "again", b"y", 1, "op-1")
    assert store.docs["acct-a/emotet"][0].version == 2


async def test_changes_nobody_repeated_after_an_outage_are_published_by_the_reporter() -> None:
    patterns, store, publisher, _ = catalogue()
    await patterns.put("acct-a", "kept", "", b"one", None, "op")
    publisher.failures = 2
    with pytest.raises(Unavailable):
        await patterns.put("acct-a", "new", "", b"two", None, "op")
    with pytest.raises(Unavailable):
        await patterns.delete("acct-a", "kept", "op")
    publisher.failures = 1  # the bus still down at the first sweep: nothing lost
    with pytest.raises(Unavailable):
        await patterns.republish()
    assert await patterns.republish() == 2
    published = {
        (s.name, s.version, s.deleted, s.content)
        for _, s, _, _ in publisher.sent
        if isinstance(s, status_pb2.CleanupPattern)
    }
    assert published == {
        ("kept", 1, False, b"one"),
        ("new", 1, False, b"two"),
        ("kept", 2, True, b""),
    }
    assert (await patterns.for_task("acct-a", "new")).published
    assert await patterns.republish() == 0  # each change once
    assert len(publisher.sent) == 3


async def test_removal_publishes_a_tombstone_and_frees_the_name() -> None:
    patterns, store, publisher, _ = catalogue()
    await patterns.put("acct-a", "p1", "", b"one", None, "op")
    publisher.failures = 1
    with pytest.raises(Unavailable):
        await patterns.delete("acct-a", "p1", "op")
    await patterns.delete("acct-a", "p1", "op")  # the retry publishes the stored tombstone
    tombstones = [s for _, s, _, _ in publisher.sent if isinstance(s, status_pb2.CleanupPattern)]
    assert [(t.version, t.deleted, t.content) for t in tombstones] == [
        (1, False, b"one"),
        (2, True, b""),
    ]
    assert await patterns.list("acct-a") == []
    with pytest.raises(NotFound):
        await patterns.delete("acct-a", "p1", "op")
    with pytest.raises(NotFound):
        await patterns.delete("acct-a", "never", "op")
    with pytest.raises(FailedPrecondition, match="no cleanup pattern"):
        await patterns.for_task("acct-a", "p1")
    again = await patterns.put("acct-a", "p1", "", b"one", 0, "op")
    assert again.version == 3


async def test_accounts_and_the_catalogue_size_are_checked() -> None:
    patterns, store, _, _ = catalogue()
    with pytest.raises(NotFound):
        await patterns.put("acct-unknown", "p", "", b"x", None, "op")
    with pytest.raises(FailedPrecondition, match="deleted"):
        await patterns.put("acct-gone", "p", "", b"x", None, "op")
    for n in range(MAX_PATTERNS):
        await patterns.put("acct-a", f"p{n:03d}", "", b"x", None, "op")
    with pytest.raises(FailedPrecondition, match=str(MAX_PATTERNS)):
        await patterns.put("acct-a", "one-more", "", b"x", None, "op")
    # replacing an existing one is still allowed
    assert (await patterns.put("acct-a", "p000", "", b"y", None, "op")).version == 2
    with pytest.raises(FailedPrecondition, match="no cleanup pattern"):
        await patterns.for_task("acct-a", "../../etc/passwd")
    assert len(store.docs) == MAX_PATTERNS


def file(**changes: Any) -> ForensicFile:
    base = ForensicFile("up-1", "task-1", "acct-a", "tmi-1", "dump.tar.gz", SHA, 300_000, 2)
    return replace(base, **changes)


def test_chunks_that_can_never_be_stored() -> None:
    check_chunk(file(), 1, MAX_CHUNK_BYTES)
    check_chunk(file(size=0, count=1), 0, 0)
    check_chunk(file(size=MAX_FILE_BYTES, count=MAX_CHUNKS), MAX_CHUNKS - 1, MAX_CHUNK_BYTES)
    cases = [
        (file(upload_id=""), 0, 1, "upload_id missing"),
        (file(task_id="", product_id=""), 0, 1, "task_id, product_id missing"),
        (file(file_name="a\x00b"), 0, 1, "file_name"),
        (file(content_sha256="abc"), 0, 1, "content_sha256"),
        (file(count=0), 0, 1, "count 0"),
        (file(count=MAX_CHUNKS + 1, size=10), 0, 1, f"count {MAX_CHUNKS + 1}"),
        (file(size=MAX_FILE_BYTES + 1, count=MAX_CHUNKS), 0, 1, "size"),
        (file(size=3 * MAX_CHUNK_BYTES), 0, 1, "size"),
        (file(), 2, 1, "index 2 of 2"),
        (file(), 0, MAX_CHUNK_BYTES + 1, "at most"),
    ]
    for meta, index, length, reason in cases:
        with pytest.raises(InvalidChunk, match=reason) as err:
            check_chunk(meta, index, length)
        assert err.value.reason.startswith("invalid: ")


def test_chunks_of_one_upload_agree_and_a_file_completes_when_all_are_there() -> None:
    check_agrees(file(), file())
    with pytest.raises(InvalidChunk, match="content_sha256, size disagree"):
        check_agrees(file(), file(content_sha256="f" * 64, size=1))
    assert not all_received({0}, 2)
    assert all_received({1, 0}, 2)
    assert not all_received({0, 2}, 2)
    data = b"forensic bytes"
    digest = hashlib.sha256(data).hexdigest()
    good = file(content_sha256=digest, size=len(data), count=1)
    assert verified(good, digest, len(data))
    assert not verified(good, SHA, len(data))
    assert not verified(good, digest, len(data) + 1)

"""Forensic data uploads (chunking, deterministic ids, the task check) and the cleanup
pattern catalogue (version guard, tombstones, who may download)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp.events.v1 import status_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tmsp_common.forensics import CHUNK_BYTES, chunk_count
from tmsp_common.kafka import topics
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_ingest.domain import forensics
from tmsp_ingest.domain.forensics import check_file_name, forensic_file, upload_id
from tmsp_ingest.domain.intake import UploadTooLarge
from tmsp_ingest.domain.patterns import MAX_PATTERN_BYTES, CleanupPattern
from tmsp_ingest.domain.products import Kind, Product
from tmsp_ingest.entrypoints.consumers import patterns_handler
from tmsp_ingest.testing import OPERATOR, REG, World

FORENSIC = status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST
CLEANUP = status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN
TMI_REG = replace(REG, kind=Kind.THREAT_MITIGATOR, name="TMI HQ")


@pytest.mark.parametrize(
    "name", ["a", "bundle.tar.gz", "ws-1_forensics.zip", "-x", "_", "9" * 128, "A.B-c_d"]
)
def test_good_file_names(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "a/b", "a\\b", "a b", "x" * 129, "é.log", "a\0b", "../etc"]
)
def test_bad_file_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument, match="^file_name: "):
        check_file_name(name)


@given(st.text(max_size=200))
def test_a_file_name_is_accepted_only_when_it_is_safe(name: str) -> None:
    try:
        check_file_name(name)
    except InvalidArgument:
        assert not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", name)
    else:
        assert "/" not in name and not name.startswith(".") and 1 <= len(name) <= 128


@given(st.binary(max_size=3 * 1024), st.integers(min_value=1, max_value=1024))
def test_chunks_reassemble_to_the_file(data: bytes, size: int) -> None:
    pieces = list(forensics.chunks(data, size))
    assert b"".join(pieces) == data
    assert len(pieces) == chunk_count(len(data), size)
    assert all(0 < len(p) <= size for p in pieces)


@pytest.mark.parametrize(
    ("size", "count"),
    [(1, 1), (CHUNK_BYTES - 1, 1), (CHUNK_BYTES, 1), (CHUNK_BYTES + 1, 2), (3 * CHUNK_BYTES, 3)],
)
def test_chunk_count_at_the_boundaries(size: int, count: int) -> None:
    assert chunk_count(size) == count == len(list(forensics.chunks(b"x" * size)))


def test_upload_id_is_deterministic_and_names_every_input() -> None:
    first = upload_id("task-1", "prd-1", "a.bin", "00" * 32)
    assert first == upload_id("task-1", "prd-1", "a.bin", "00" * 32)
    assert re.fullmatch(r"fd-[0-9a-f]{32}", first)
    others = {
        upload_id("task-2", "prd-1", "a.bin", "00" * 32),
        upload_id("task-1", "prd-2", "a.bin", "00" * 32),
        upload_id("task-1", "prd-1", "b.bin", "00" * 32),
        upload_id("task-1", "prd-1", "a.bin", "11" * 32),
        upload_id("task-1prd-1", "", "a.bin", "00" * 32),
    }
    assert first not in others and len(others) == 5


async def _task(
    world: World, product: Product, task_id: str, kind: status_pb2.MitigationTaskKind.ValueType
) -> None:
    await world.tasks.add(
        status_pb2.MitigationTask(
            task_id=task_id, account_id=product.account_id, product_id=product.product_id, kind=kind
        )
    )


async def test_forensic_upload_publishes_every_chunk_with_the_file_metadata(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, TMI_REG)
    await _task(world, product, "task-1", FORENSIC)
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two full chunks and a bit
    with world.intake.hold() as hold:
        file = await world.forensics.upload(
            product, "task-1", "bundle.tgz", data, protocol=1, hold=hold
        )
    chunks = world.publisher.chunks
    assert [c.index for c in chunks] == [0, 1, 2] and {c.count for c in chunks} == {3}
    assert b"".join(c.data for c in chunks) == data
    sha = hashlib.sha256(data).hexdigest()
    assert (file.content_sha256, file.size, file.count) == (sha, len(data), 3)
    assert file.upload_id == upload_id("task-1", product.product_id, "bundle.tgz", sha)
    for chunk in chunks:
        assert (chunk.upload_id, chunk.task_id, chunk.file_name) == (
            file.upload_id,
            "task-1",
            "bundle.tgz",
        )
        assert (chunk.account_id, chunk.product_id) == (product.account_id, product.product_id)
        assert (chunk.content_sha256, chunk.size, chunk.protocol) == (sha, len(data), 1)
        assert chunk.received_at.seconds == int(world.clock.now().timestamp())
    assert world.intake.buffer.held == 0

    # A retry (the answer was lost) names the same upload and the same chunks.
    again = await world.forensics.upload(
        product, "task-1", "bundle.tgz", data, protocol=1, hold=world.intake.hold()
    )
    assert again == file
    assert [c.SerializeToString() for c in world.publisher.chunks[3:]] == [
        c.SerializeToString() for c in chunks[:3]
    ]


async def test_forensic_upload_is_refused_for_the_wrong_task_or_file(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, TMI_REG)
    other, _ = await world.registry.register(OPERATOR, replace(TMI_REG, name="TMI 2"))
    await _task(world, product, "mine", FORENSIC)
    await _task(world, other, "theirs", FORENSIC)
    await _task(world, product, "cleanup", CLEANUP)
    hold = world.intake.hold()
    cases: list[tuple[str, str, bytes, type[Exception], str]] = [
        ("nope", "a.bin", b"x", NotFound, "task not found"),
        ("", "a.bin", b"x", NotFound, "task not found"),
        ("theirs", "a.bin", b"x", NotFound, "task not found"),
        ("cleanup", "a.bin", b"x", FailedPrecondition, "not a forensic data request"),
        ("mine", ".a", b"x", InvalidArgument, "file_name"),
        ("mine", "a.bin", b"", InvalidArgument, "empty"),
        ("mine", "a.bin", b"x" * 2_000_001, UploadTooLarge, "larger than"),
    ]
    for task_id, name, data, error, words in cases:
        with pytest.raises(error, match=words):
            await world.forensics.upload(product, task_id, name, data, protocol=2, hold=hold)
    assert world.publisher.chunks == [] and world.intake.buffer.held == 0
    await world.forensics.accepts(product, "mine", "a.bin")  # the good one passes


async def test_forensic_retry_while_publishing_joins_and_bus_failure_is_retryable(
    world: World,
) -> None:
    product, _ = await world.registry.register(OPERATOR, TMI_REG)
    await _task(world, product, "t", FORENSIC)
    data = b"y" * (CHUNK_BYTES + 10)
    world.publisher.gate = asyncio.Event()
    first = asyncio.create_task(
        world.forensics.upload(product, "t", "f.bin", data, protocol=1, hold=world.intake.hold())
    )
    await asyncio.sleep(0)
    second = asyncio.create_task(
        world.forensics.upload(product, "t", "f.bin", data, protocol=1, hold=world.intake.hold())
    )
    await asyncio.sleep(0)
    assert world.intake.in_flight == 1
    world.publisher.gate.set()
    assert (await first) == (await second)
    assert len(world.publisher.chunks) == 2  # published once
    assert world.intake.buffer.held == 0

    world.publisher.gate = None
    world.publisher.fail = True
    with pytest.raises(Unavailable):
        await world.forensics.upload(
            product, "t", "g.bin", data, protocol=1, hold=world.intake.hold()
        )
    assert world.intake.buffer.held == 0 and world.intake.in_flight == 0


def pattern(
    version: int,
    content: bytes = b"rule 1\n",
    *,
    deleted: bool = False,
    account_id: str = "acct-a",
    name: str = "emotet",
) -> CleanupPattern:
    body = b"" if deleted else content
    return CleanupPattern(
        account_id=account_id,
        name=name,
        content=body,
        content_sha256=hashlib.sha256(body).hexdigest() if body else "",
        size=len(body),
        version=version,
        deleted=deleted,
    )


async def _stored(world: World, name: str = "emotet") -> CleanupPattern:
    stored = await world.patterns.store.get("acct-a", name)
    assert stored is not None
    return stored


async def test_highest_version_wins_and_a_tombstone_stays(world: World) -> None:
    assert await world.patterns.apply(pattern(2, b"v2"))
    assert not await world.patterns.apply(pattern(1, b"v1"))  # a stale replay
    assert (await _stored(world)).content == b"v2"
    assert await world.patterns.apply(pattern(2, b"v2"))  # the same change again
    assert await world.patterns.apply(pattern(3, deleted=True))
    assert not await world.patterns.apply(pattern(2, b"v2"))  # does not resurrect it
    stored = await _stored(world)
    assert stored.deleted and stored.version == 3
    assert await world.patterns.apply(pattern(4, b"v4"))  # put again after the removal
    assert (await _stored(world)).content == b"v4"


async def test_only_the_accounts_threat_mitigators_download_a_pattern(world: World) -> None:
    tmi, _ = await world.registry.register(OPERATOR, TMI_REG)
    tda, _ = await world.registry.register(OPERATOR, REG)
    other, _ = await world.registry.register(
        OPERATOR, replace(TMI_REG, account_id="acct-b", registration_email="owner@b.example")
    )
    await world.patterns.apply(pattern(1, b"clean it"))
    await world.patterns.apply(pattern(1, b"gone", name="old"))
    await world.patterns.apply(pattern(2, name="old", deleted=True))
    got = await world.patterns.download(tmi, "emotet")
    assert (
        got.content == b"clean it" and got.content_sha256 == hashlib.sha256(got.content).hexdigest()
    )
    with pytest.raises(PermissionDenied):
        await world.patterns.download(tda, "emotet")
    with pytest.raises(PermissionDenied):  # a TDA learns nothing about what exists
        await world.patterns.download(tda, "no-such")
    for product, name in ((other, "emotet"), (tmi, "old"), (tmi, "no-such")):
        with pytest.raises(NotFound, match="not found") as refused:
            await world.patterns.download(product, name)
        assert "acct" not in str(refused.value)
    with pytest.raises(InvalidArgument, match="^name: "):
        await world.patterns.download(tmi, "../x")
    assert [p.name for p in await world.patterns.listing(tmi)] == ["emotet"]
    assert await world.patterns.listing(other) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (replace(pattern(1), account_id=""), "without account_id"),
        (replace(pattern(1), name=".x"), "invalid name"),
        (replace(pattern(1), version=0), "without a version"),
        (replace(pattern(1), content_sha256="00" * 32), "does not match its content_sha256"),
        (replace(pattern(1), size=3), "size"),
        (pattern(1, b"x" * (MAX_PATTERN_BYTES + 1)), "larger than"),
    ],
)
def test_a_pattern_that_cannot_be_stored_says_why(bad: CleanupPattern, reason: str) -> None:
    assert reason in (bad.problem() or "")


async def test_the_patterns_consumer_stores_good_ones_and_dead_letters_bad_ones(
    world: World,
) -> None:
    handle = patterns_handler(world.patterns)

    def event(p: CleanupPattern) -> ConsumedEvent[Any]:
        msg = status_pb2.CleanupPattern(
            account_id=p.account_id,
            name=p.name,
            content=p.content,
            content_sha256=p.content_sha256,
            size=p.size,
            version=p.version,
            deleted=p.deleted,
        )
        return ConsumedEvent(topics.CLEANUP_PATTERNS, 0, 0, None, Envelope(), msg)

    await handle(
        [
            event(pattern(1, b"a")),
            event(pattern(1, name="tomb")),
            event(pattern(2, name="tomb", deleted=True)),
        ]
    )
    assert (await _stored(world)).content == b"a"
    assert (await _stored(world, "tomb")).deleted
    with pytest.raises(InvalidEvent, match="content_sha256"):
        await handle([event(replace(pattern(3), content_sha256="ab" * 32))])


def test_forensic_file_counts_its_chunks() -> None:
    file = forensic_file("t", "a", "p", "f", b"z" * (CHUNK_BYTES * 2))
    assert file.count == 2 and file.size == CHUNK_BYTES * 2

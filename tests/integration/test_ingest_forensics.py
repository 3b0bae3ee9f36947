"""Threat mitigation data on the log servers, against real Kafka and Mongo: forensic data
uploaded with curl and with OpenSSH ``sftp`` lands on the forensic data topic in chunks;
cleanup patterns published on the compacted topic are served over HTTPS and SFTP to the
account's Threat Mitigators only, newest version wins, at the download bandwidth.

Needs ``curl``, ``sftp`` (openssh-client) and ``sshpass`` on the PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tmsp.events.v1 import products_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.kafka import topics
from tmsp_common.kafka.consumer import DLQ_REASON
from tmsp_common.kafka.envelope import unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.testing import TopicReader, wait_until
from tmsp_ingest.harness import Gateway, curl, openssh_sftp, scrape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.tls,
    pytest.mark.ssh,
]

TMI = products_pb2.PRODUCT_KIND_THREAT_MITIGATOR
FORENSIC = status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST
CLEANUP = status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN
CHUNK = 256 * 1024


@pytest.fixture
async def gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap, infra.mongo_url, names.prefix, names.database("ingest"), tmp_path
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    await gw.publish_account("acct-b", "owner@b.example")
    yield gw
    gw.stop()


def basic(reg: ingest_pb2.RegisterProductResponse) -> str:
    return f"{reg.credentials.user_name}:{reg.credentials.password}"


async def publish(gw: Gateway, topic: Any, event: Any, key: str, account_id: str) -> None:
    async with EventProducer(gw.kafka_bootstrap, service="reporter", topic_prefix=gw.prefix) as p:
        await p.publish(topic, event, key=key, account_id=account_id)


async def give_task(
    gw: Gateway, reg: ingest_pb2.RegisterProductResponse, task_id: str, kind: int
) -> None:
    task = status_pb2.MitigationTask(
        task_id=task_id,
        account_id=reg.product.account_id,
        product_id=reg.product.product_id,
        kind=kind,  # type: ignore[arg-type]
        parameters={"endpoint": "ws-7"},
    )
    await publish(gw, topics.MITIGATION_TASKS, task, task.product_id, task.account_id)


async def forensic_post(
    gw: Gateway, user: str, task_id: str, name: str, body: Path
) -> tuple[int, dict[str, Any]]:
    status, _, answer = curl(
        gw,
        "-u",
        user,
        "--data-binary",
        f"@{body}",
        "-H",
        "Content-Type: application/octet-stream",
        f"/v1/forensic-data?task_id={task_id}&file_name={name}",
    )
    return status, json.loads(answer)


async def chunks_of(gw: Gateway, count: int) -> list[tuple[bytes, str, Any]]:
    """(key, envelope event id, chunk) of the first ``count`` forensic data records."""
    async with TopicReader(gw.kafka_bootstrap, topics.FORENSIC_DATA, gw.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= count, timeout=30)
    out = []
    for record in records:
        envelope, chunk = unwrap(record.value, status_pb2.ForensicDataChunk)
        out.append((record.key, envelope.event_id, chunk))
    return out


def reassembled(chunks: list[tuple[bytes, str, Any]], upload_id: str) -> bytes:
    mine = sorted((c for _, _, c in chunks if c.upload_id == upload_id), key=lambda c: c.index)
    assert [c.index for c in mine] == list(range(mine[0].count))
    return b"".join(c.data for c in mine)


async def test_forensic_data_over_https_lands_in_chunks_and_wrong_tasks_are_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    tmi = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-HQ")
    other = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-2")
    user = basic(tmi)
    await give_task(gateway, tmi, "task-fd-1", FORENSIC)
    await give_task(gateway, tmi, "task-clean-1", CLEANUP)
    await give_task(gateway, other, "task-fd-other", FORENSIC)
    data = os.urandom(2 * CHUNK + 12345)  # three chunks, the last one short
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(data)

    async def stored() -> tuple[int, dict[str, Any]] | None:
        got = await forensic_post(gateway, user, "task-fd-1", "ws-7.tar.gz", bundle)
        return got if got[0] != 404 else None  # the task is not consumed yet

    status, answer = await wait_until(stored, timeout=30, interval=0.5)
    sha = hashlib.sha256(data).hexdigest()
    assert status == 201, answer
    assert (answer["content_sha256"], answer["size"], answer["chunks"]) == (sha, len(data), 3)
    assert answer["upload_id"].startswith("fd-") and len(answer["upload_id"]) == 35

    chunks = await chunks_of(gateway, 3)
    assert reassembled(chunks, answer["upload_id"]) == data
    for key, event_id, chunk in chunks:
        assert key == answer["upload_id"].encode()
        assert event_id == f"{chunk.upload_id}:{chunk.index}"
        assert (chunk.task_id, chunk.file_name, chunk.product_id, chunk.account_id) == (
            "task-fd-1",
            "ws-7.tar.gz",
            tmi.product.product_id,
            "acct-a",
        )
        assert chunk.protocol == products_pb2.UPLOAD_PROTOCOL_SSL and chunk.size == len(data)
    assert max(len(c.data) for _, _, c in chunks) == CHUNK

    # A retry names the same upload (consumers keep one copy).
    status, again = await forensic_post(gateway, user, "task-fd-1", "ws-7.tar.gz", bundle)
    assert status == 201 and again == answer
    # Refusals, with the reason.
    for task_id, name, code, words in (
        ("no-such-task", "a.bin", 404, "task not found"),
        ("task-fd-other", "a.bin", 404, "task not found"),  # another product's
        ("task-clean-1", "a.bin", 409, "not a forensic data request"),
        ("task-fd-1", ".profile", 400, "file_name"),
    ):
        status, refused = await forensic_post(gateway, user, task_id, name, bundle)
        assert (status, words in refused["error"]) == (code, True), refused
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    status, refused = await forensic_post(gateway, user, "task-fd-1", "a.bin", empty)
    assert status == 400 and "empty" in refused["error"]
    status, _, _ = curl(gateway, "-u", "x:y", "--data", "x", "/v1/forensic-data?task_id=t")
    assert status == 401

    samples = scrape(gateway)
    ok = 'tmsp_ingest_forensic_uploads_total{protocol="https",result="ok"}'
    assert samples[ok] == 2
    assert samples['tmsp_ingest_forensic_chunks_total{protocol="https"}'] == 6
    assert gateway.process is not None and "forensic data received" in gateway.process.logs


async def test_forensic_data_over_openssh_sftp(gateway: Gateway, tmp_path: Path) -> None:
    tmi = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-HQ")
    creds = tmi.credentials
    await give_task(gateway, tmi, "task-sftp", FORENSIC)
    await give_task(gateway, tmi, "task-clean", CLEANUP)
    data = os.urandom(CHUNK + 1000)
    (tmp_path / "memory.dmp").write_bytes(data)

    def put(task_id: str) -> Any:
        return openssh_sftp(
            gateway,
            creds.user_name,
            creds.password,
            f"-mkdir forensics\n-mkdir forensics/{task_id}\n"
            f"put memory.dmp forensics/{task_id}/memory.dmp\n",
            tmp_path,
        )

    async def landed() -> Any:
        done = put("task-sftp")
        return done if done.returncode == 0 else None  # the task is not consumed yet

    await wait_until(landed, timeout=30, interval=0.5)
    chunks = await chunks_of(gateway, 2)
    upload = chunks[0][2].upload_id
    assert reassembled(chunks, upload) == data
    assert {c.protocol for _, _, c in chunks} == {products_pb2.UPLOAD_PROTOCOL_SSH}
    assert {(c.task_id, c.file_name) for _, _, c in chunks} == {("task-sftp", "memory.dmp")}
    assert chunks[0][2].content_sha256 == hashlib.sha256(data).hexdigest()

    refused = put("task-clean")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr
    refused = put("nobodys-task")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr
    # asyncssh shows the gateway's reason; nothing lands for refused or misplaced files.
    async with (
        gateway.sftp_connect(creds.user_name, password=creds.password) as conn,
        conn.start_sftp_client() as sftp,
    ):
        await sftp.makedirs("forensics/task-sftp", exist_ok=True)  # as the demo's TMI does
        async with sftp.open("forensics/task-sftp/notes.txt", "wb") as fh:
            await fh.write(b"collected at 10:00\n")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="not a forensic data request"):
            await sftp.open("forensics/task-clean/a.bin", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="forensics/<task_id>/<file"):
            await sftp.open("forensics/loose.log", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="file_name"):
            await sftp.open("forensics/task-sftp/.hidden", "wb")
        with pytest.raises(asyncssh.SFTPError):  # empty file refused at the close
            async with sftp.open("forensics/task-sftp/empty.bin", "wb"):
                pass
    async with TopicReader(gateway.kafka_bootstrap, topics.FORENSIC_DATA, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 3, timeout=20)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 3, timeout=3)
    # the topic has several partitions (key: upload id): records come in no global order
    decoded = [unwrap(r.value, status_pb2.ForensicDataChunk)[1] for r in records]
    (notes,) = [c for c in decoded if c.file_name == "notes.txt"]
    assert (notes.data, notes.count) == (b"collected at 10:00\n", 1)
    assert sorted(c.file_name for c in decoded) == ["memory.dmp", "memory.dmp", "notes.txt"]


def pattern_event(
    name: str, content: bytes, version: int, *, account_id: str = "acct-a", deleted: bool = False
) -> status_pb2.CleanupPattern:
    body = b"" if deleted else content
    return status_pb2.CleanupPattern(
        account_id=account_id,
        name=name,
        description="cleans it",
        content=body,
        content_sha256=hashlib.sha256(body).hexdigest() if body else "",
        size=len(body),
        version=version,
        deleted=deleted,
    )


async def put_pattern(gw: Gateway, event: status_pb2.CleanupPattern) -> None:
    key = f"{event.account_id}/{event.name}"
    await publish(gw, topics.CLEANUP_PATTERNS, event, key, event.account_id)


def download(
    gw: Gateway, user: str, name: str, *extra: str
) -> tuple[int, dict[str, str], bytes, float]:
    """curl GET of a pattern: (status, headers, body bytes, seconds)."""
    out = gw.workdir / f"download-{time.monotonic_ns()}"
    started = time.monotonic()
    status, headers, _ = curl(
        gw, "-u", user, "-o", str(out), *extra, f"/v1/cleanup-patterns/{name}"
    )
    elapsed = time.monotonic() - started
    body = out.read_bytes() if out.exists() else b""
    return status, headers, body, elapsed


def stale_updates(gw: Gateway) -> float:
    return scrape(gw).get('tmsp_ingest_pattern_updates_total{result="stale"}', 0.0)


async def test_cleanup_patterns_over_https_newest_version_only_for_the_accounts_mitigators(
    gateway: Gateway,
) -> None:
    tmi = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-HQ")
    tda = await gateway.register("acct-a", "owner@a.example", name="TDA")
    foreign = await gateway.register("acct-b", "owner@b.example", kind=TMI, name="TMI-B")
    v2 = os.urandom(300 * 1024)
    await put_pattern(gateway, pattern_event("emotet", b"first", 1))
    await put_pattern(gateway, pattern_event("emotet", v2, 2))

    async def served() -> tuple[int, dict[str, str], bytes, float] | None:
        got = download(gateway, basic(tmi), "emotet")
        return got if got[0] == 200 and got[2] == v2 else None

    status, headers, body, _ = await wait_until(served, timeout=30, interval=0.5)
    sha = hashlib.sha256(v2).hexdigest()
    assert headers["etag"] == f'"{sha}"' and headers["x-content-sha256"] == sha
    assert headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(body).hexdigest() == sha
    status, _, _, _ = download(gateway, basic(tmi), "emotet", "-H", f'If-None-Match: "{sha}"')
    assert status == 304

    status, _, body, _ = download(gateway, basic(tda), "emotet")
    assert status == 403 and b"Threat Mitigators" in body
    status, _, body, _ = download(gateway, basic(foreign), "emotet")
    assert status == 404 and b"not found" in body
    status, _, body, _ = download(gateway, basic(tmi), "unknown")
    assert status == 404 and b"not found" in body
    assert download(gateway, basic(tmi), "..%2Fx")[0] in (400, 404)
    assert download(gateway, "x:y", "emotet")[0] == 401

    # A replayed older version does not overwrite the newer one.
    await put_pattern(gateway, pattern_event("emotet", b"first", 1))
    await wait_until(lambda: stale_updates(gateway) >= 1, timeout=30, interval=0.3)
    assert download(gateway, basic(tmi), "emotet")[2] == v2
    # Removed: 404, and an older put replayed later does not bring it back.
    await put_pattern(gateway, pattern_event("emotet", b"", 3, deleted=True))
    await wait_until(lambda: download(gateway, basic(tmi), "emotet")[0] == 404, timeout=30)
    await put_pattern(gateway, pattern_event("emotet", v2, 2))
    await wait_until(lambda: stale_updates(gateway) >= 2, timeout=30, interval=0.3)
    assert download(gateway, basic(tmi), "emotet")[0] == 404

    # An undecodable record and one whose content does not match its hash: dead-lettered.
    bad = pattern_event("broken", b"abc", 1)
    bad.content_sha256 = "00" * 32
    await put_pattern(gateway, bad)
    async with EventProducer(
        gateway.kafka_bootstrap, service="x", topic_prefix=gateway.prefix
    ) as p:
        fut = await p.send_raw(
            topics.CLEANUP_PATTERNS.qualified(gateway.prefix), b"\xffnot a pb", key=b"acct-a/junk"
        )
        await fut
    dlq = topics.CLEANUP_PATTERNS.dead_letter
    assert dlq is not None
    async with TopicReader(gateway.kafka_bootstrap, dlq, gateway.prefix) as reader:
        dead = await reader.read_until(lambda rs: len(rs) >= 2, timeout=30)
    reasons = sorted(dict(r.headers)[DLQ_REASON].decode() for r in dead)
    assert any("content_sha256" in r for r in reasons), reasons
    assert {r.key for r in dead} == {b"acct-a/broken", b"acct-a/junk"}
    assert gateway.process is not None and gateway.process.alive()


async def test_pattern_download_honours_the_download_bandwidth(gateway: Gateway) -> None:
    """1024 B/s with a one-second burst: 5 KiB cannot arrive in under 4 s (lower bound)."""
    tmi = await gateway.register(
        "acct-a",
        "owner@a.example",
        kind=TMI,
        name="TMI-slow",
        download_bandwidth_bytes_per_second=1024,
    )
    content = os.urandom(5 * 1024)
    await put_pattern(gateway, pattern_event("slow", content, 1))
    unlimited = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-fast")
    await wait_until(lambda: download(gateway, basic(unlimited), "slow")[0] == 200, timeout=30)

    status, _, body, elapsed = download(gateway, basic(tmi), "slow")
    assert status == 200 and body == content
    assert elapsed >= (len(content) - 1024) / 1024 * 0.9, elapsed


async def test_cleanup_patterns_over_openssh_sftp_read_only(
    gateway: Gateway, tmp_path: Path
) -> None:
    tmi = await gateway.register("acct-a", "owner@a.example", kind=TMI, name="TMI-HQ")
    tda = await gateway.register("acct-a", "owner@a.example", name="TDA")
    content = os.urandom(100 * 1024 + 7)  # several SFTP reads
    await put_pattern(gateway, pattern_event("kill-emotet.json", content, 1))
    await put_pattern(gateway, pattern_event("other", b"x", 1, account_id="acct-b"))
    creds = tmi.credentials
    await wait_until(
        lambda: download(gateway, basic(tmi), "kill-emotet.json")[0] == 200, timeout=30
    )

    got = openssh_sftp(
        gateway,
        creds.user_name,
        creds.password,
        "get cleanup-patterns/kill-emotet.json got.json\nls -l cleanup-patterns\nls\n",
        tmp_path,
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "got.json").read_bytes() == content
    assert "kill-emotet.json" in got.stdout and "other" not in got.stdout
    assert str(len(content)) in got.stdout

    (tmp_path / "x.json").write_bytes(b"{}")
    for command in (
        "put x.json cleanup-patterns/kill-emotet.json\n",
        "mkdir cleanup-patterns\n",
        "get cleanup-patterns/other\n",  # another account's
    ):
        refused = openssh_sftp(gateway, creds.user_name, creds.password, command, tmp_path)
        assert refused.returncode != 0, command
    tda_get = openssh_sftp(
        gateway,
        tda.credentials.user_name,
        tda.credentials.password,
        "get cleanup-patterns/kill-emotet.json tda.json\n",
        tmp_path,
    )
    assert tda_get.returncode != 0 and not (tmp_path / "tda.json").exists()  # OpenSSH's glob
    async with (  # says "not found"; the gateway's reason, as asyncssh shows it:
        gateway.sftp_connect(tda.credentials.user_name, password=tda.credentials.password) as c,
        c.start_sftp_client() as tda_sftp,
    ):
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="for Threat Mitigators"):
            await tda_sftp.open("cleanup-patterns/kill-emotet.json")
    async with (
        gateway.sftp_connect(creds.user_name, password=creds.password) as conn,
        conn.start_sftp_client() as sftp,
    ):
        with pytest.raises(asyncssh.SFTPPermissionDenied, match="read-only"):
            await sftp.open("cleanup-patterns/new", "wb")
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.stat("cleanup-patterns/other")
        assert (await sftp.stat("cleanup-patterns/kill-emotet.json")).size == len(content)

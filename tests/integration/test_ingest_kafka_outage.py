"""Kafka stopped during an upload: the upload fails (SFTP close and HTTPS both); after the
broker is back the retried upload lands exactly once. Once with the broker gone before the
file is closed, once killed while the upload's records are being published (some already
in the topic). And a syslog-over-TLS stream, which must be closed (not left hanging) when
Kafka does not acknowledge its batch.

Runs its own throwaway KRaft broker (the shared one is never stopped) from the jars that
``deploy/local/infra.py`` installed under ``.local/kafka/libs``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import grpc
import pytest

from tmsp.events.v1 import detections_pb2, products_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.grpc_client import bearer
from tmsp_common.kafka import topics
from tmsp_common.kafka.envelope import unwrap
from tmsp_common.testing import REPO_ROOT, TopicReader
from tmsp_ingest.harness import Gateway, PrivateKafka, closed_by_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.ssh,
    pytest.mark.tls,
    pytest.mark.slow,
]

RECORDS = 200


def cef(records: int) -> bytes:
    return b"".join(
        b"CEF:0|Trend Micro|TDA|2.5|%d|Threat %d|5|src=10.0.%d.%d\n" % (i, i, i // 250, i % 250)
        for i in range(records)
    )


CEF = cef(RECORDS)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path / "kafka", REPO_ROOT)
    broker.format()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def gateway(infra, names, tmp_path: Path, kafka: PrivateKafka) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    await kafka.wait_ready()
    gw = Gateway(
        kafka.bootstrap,
        infra.mongo_url,
        names.prefix,
        names.database("ingest"),
        tmp_path / "gw",
        extra_env={"TMSP_INGEST_ACK_TIMEOUT_SECONDS": "4"},
    )
    gw.start(timeout=90)
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


async def put_until_accepted(
    gateway: Gateway, user: str, password: str, name: str, data: bytes, *, within_s: float
) -> None:
    """What an appliance does: retry the upload until the close succeeds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await gateway.sftp_put(user, name, data, password=password)
            return
        except asyncssh.SFTPFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def assert_landed_once(
    kafka: PrivateKafka, gateway: Gateway, records: int, *, timeout: float
) -> None:
    """Every record of the upload is on the bus exactly once, with one "upload received"."""
    async with TopicReader(kafka.bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        landed = await r.read_until(lambda rs: len(rs) >= records, timeout=timeout)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > records, timeout=3)
    ids = Counter(unwrap(rec.value, detections_pb2.Detection)[1].event_id for rec in landed)
    assert len(ids) == records and set(ids.values()) == {1}
    async with TopicReader(kafka.bootstrap, topics.UPLOADS, gateway.prefix) as r:
        (done,) = await r.read_events(status_pb2.UploadReceived, 1, timeout=20)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 1, timeout=2)
    assert done.records_accepted == records


async def test_upload_fails_while_kafka_is_down_and_the_retry_lands_once(
    gateway: Gateway, kafka: PrivateKafka, tmp_path: Path
) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    user, password = reg.credentials.user_name, reg.credentials.password

    kafka.kill()
    with pytest.raises(asyncssh.SFTPFailure, match="retry"):
        await gateway.sftp_put(user, "outage.log", CEF, password=password)

    upload = tmp_path / "outage.log"
    upload.write_bytes(CEF)
    curl = subprocess.run(  # noqa: S603
        ["curl", "-sS", "--cacert", str(gateway.ca), "-u", f"{user}:{password}",  # noqa: S607
         "--data-binary", f"@{upload}", "-o", "/dev/null", "-w", "%{http_code}",
         f"https://127.0.0.1:{gateway.ports['https']}/v1/uploads?file=outage.log"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert curl.stdout == "503"

    kafka.start()
    await kafka.wait_ready()
    await put_until_accepted(gateway, user, password, "outage.log", CEF, within_s=60)
    # And a retry after success is recognised.
    await gateway.sftp_put(user, "outage.log", CEF, password=password)

    await assert_landed_once(kafka, gateway, RECORDS, timeout=30)


async def test_kafka_killed_while_the_records_are_published_then_the_retry_lands_once(
    gateway: Gateway, kafka: PrivateKafka
) -> None:
    records = 60_000
    data = cef(records)
    reg = await gateway.register("acct-a", "owner@a.example")
    user, password = reg.credentials.user_name, reg.credentials.password

    put = asyncio.create_task(gateway.sftp_put(user, "mid.log", data, password=password))
    async with TopicReader(kafka.bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        await r.read_until(lambda rs: len(rs) > 0, timeout=60)
    assert not put.done(), "the upload was acknowledged before the broker could be stopped"
    kafka.kill()
    with pytest.raises(asyncssh.SFTPFailure, match="retry"):
        await put

    kafka.start()
    await kafka.wait_ready()
    await put_until_accepted(gateway, user, password, "mid.log", data, within_s=90)

    await assert_landed_once(kafka, gateway, records, timeout=60)


async def test_a_syslog_stream_is_closed_when_kafka_does_not_acknowledge_its_batch(
    gateway: Gateway, kafka: PrivateKafka, tmp_path: Path
) -> None:
    """aiokafka's idempotent producer retries a batch forever while the broker is down; the
    session must be closed after ACK_TIMEOUT_SECONDS (4 here), not wait with it."""
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    reader, writer = await gateway.syslog_connect(gateway.syslog_context(reg.credentials, tmp_path))
    line = b"<13>1 - h a - - - streamed"
    writer.write(b"%d %s" % (len(line), line))
    await writer.drain()
    async with TopicReader(kafka.bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        await r.read_until(lambda rs: len(rs) > 0, timeout=30)
    async with TopicReader(kafka.bootstrap, topics.UPLOADS, gateway.prefix) as r:
        await r.read_until(lambda rs: len(rs) > 0, timeout=30)  # nothing else in flight

    kafka.kill()
    writer.write(b"%d %s" % (len(line), line))
    await writer.drain()
    started = time.monotonic()
    try:
        assert await closed_by_server(reader, timeout=20), "the session hangs"
    finally:
        writer.close()
    assert time.monotonic() - started < 15
    assert gateway.process is not None
    gateway.process.wait_for_log("not acknowledged the batch within 4s", 5)


async def test_a_registration_retried_after_kafka_was_down_is_one_product(
    gateway: Gateway, kafka: PrivateKafka
) -> None:
    """RegisterProduct stored the product, then could not publish it: the operator's retry
    (same request id) returns that product with working credentials, not a second one."""
    first = await gateway.register("acct-a", "owner@a.example", name="known")  # account known
    kafka.kill()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.register("acct-a", "owner@a.example", name="HQ", request_id="r-1", timeout=0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    kafka.start()
    await kafka.wait_ready()
    reg = await gateway.register(
        "acct-a", "owner@a.example", name="HQ", request_id="r-1", timeout=90
    )
    chan, stub = gateway.stub()
    try:
        listed = await stub.ListProducts(
            ingest_pb2.ListProductsRequest(account_id="acct-a"), metadata=bearer(gateway.token())
        )
    finally:
        await chan.close()
    assert sorted(p.name for p in listed.products) == ["HQ", "known"]
    assert reg.product.product_id != first.product.product_id
    assert reg.product.version == 2  # stored, then stored again with fresh credentials
    await gateway.sftp_put(
        reg.credentials.user_name, "hello.log", CEF, password=reg.credentials.password
    )

    # The timed-out first snapshot (version 1) may still land once the broker is back: the
    # producer kept it queued. What counts is that the retry's snapshot comes last.
    def snapshots(records: list[Any]) -> list[products_pb2.ProductSnapshot]:
        snaps = (unwrap(x.value, products_pb2.ProductSnapshot)[1] for x in records)
        return [s for s in snaps if s.product_id == reg.product.product_id]

    async with TopicReader(kafka.bootstrap, topics.PRODUCTS, gateway.prefix) as r:
        records = await r.read_until(
            lambda rs: any(s.version == reg.product.version for s in snapshots(rs)), timeout=30
        )
    assert snapshots(records)[-1].version == reg.product.version

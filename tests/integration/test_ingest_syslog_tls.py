"""Syslog over TLS (RFC 5425) with a Python TLS client holding the product's certificate:
framing, refusals, an open stream ended when the product loses its standing, "Last
Received" for a stream."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tmsp.events.v1 import detections_pb2, products_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.grpc_client import bearer
from tmsp_common.kafka import topics
from tmsp_common.testing import TopicReader
from tmsp_ingest.harness import Gateway, closed_by_server

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.tls]


@pytest.fixture
async def gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        names.prefix,
        names.database("ingest"),
        tmp_path,
        extra_env={
            "TMSP_INGEST_SYSLOG_BATCH_SECONDS": "0.2",
            "TMSP_INGEST_SYSLOG_STANDING_RECHECK_SECONDS": "0",
        },
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


def octets(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


async def test_rfc5425_stream_is_published(gateway: Gateway, tmp_path: Path) -> None:
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    context = gateway.syslog_context(reg.credentials, tmp_path)
    reader, writer = await gateway.syslog_connect(context)
    first = b"<165>1 2026-11-20T10:00:00Z tda-1 tda - ID1 - CEF:0|TM|TDA|1|9|Worm|9|src=1.2.3.4"
    second = b'<13>1 2026-11-20T10:00:01Z tda-1 tda - ID2 [x@1 src="5.6.7.8"] spaced out msg'
    writer.write(octets(first) + octets(second)[:10])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(octets(second)[10:] + b"<13>Nov 20 10:00:02 tda-1 tda: newline framed\n")
    await writer.drain()
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        dets = await r.read_events(detections_pb2.Detection, 3, timeout=20)
    assert [d.threat_name for d in dets] == ["Worm", "spaced out msg", "newline framed"]
    assert dets[1].source.address == "5.6.7.8"
    assert {d.product_id for d in dets} == {reg.product.product_id}
    assert len({d.event_id for d in dets}) == 3
    writer.close()

    # Bad framing closes the connection.
    reader, writer = await gateway.syslog_connect(context)
    writer.write(b"99999999 x")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_rotated_certificate_and_no_certificate_are_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    old_context = gateway.syslog_context(reg.credentials, tmp_path)
    chan, stub = gateway.stub()
    await stub.RotateProductCredentials(
        ingest_pb2.RotateProductCredentialsRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    await chan.close()
    reader, writer = await gateway.syslog_connect(old_context)
    writer.write(octets(b"<13>1 - h a - - - should not land"))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()

    bare = ssl.create_default_context(cafile=str(gateway.ca))
    try:
        reader, writer = await gateway.syslog_connect(bare)
        writer.write(octets(b"<13>1 - h a - - - no certificate"))
        await writer.drain()
        # TLS 1.3: the server's refusal arrives on the first read (alert or EOF).
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except (ssl.SSLError, ConnectionError):
        pass
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 0, timeout=3)


async def change(gw: Gateway, what: str, product_id: str) -> None:
    """What an operator (or the account's deletion in auth) does to a streaming product."""
    if what == "delete account":
        await gw.publish_account("acct-a", "owner@a.example", deleted=True, version=2)
        return
    chan, stub = gw.stub()
    try:
        if what == "rotate":
            await stub.RotateProductCredentials(
                ingest_pb2.RotateProductCredentialsRequest(product_id=product_id),
                metadata=bearer(gw.token()),
            )
        else:
            await stub.DisableProduct(
                ingest_pb2.DisableProductRequest(product_id=product_id),
                metadata=bearer(gw.token()),
            )
    finally:
        await chan.close()


@pytest.mark.parametrize("what", ["rotate", "disable", "delete account"])
async def test_an_open_stream_is_closed_once_the_product_loses_its_standing(
    gateway: Gateway, tmp_path: Path, what: str
) -> None:
    """A leaked certificate's open stream must not go on publishing after rotation,
    disabling or the account's deletion."""
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    reader, writer = await gateway.syslog_connect(gateway.syslog_context(reg.credentials, tmp_path))
    writer.write(octets(b"<13>1 - h a - - - before the change"))
    await writer.drain()
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        await r.read_events(detections_pb2.Detection, 1, timeout=20)
    await change(gateway, what, reg.product.product_id)

    async def keep_streaming() -> None:  # the accounts projection applies a deletion later
        for n in range(200):
            writer.write(octets(b"<13>1 - h a - - - after the change %d" % n))
            await writer.drain()
            await asyncio.sleep(0.1)

    streaming = asyncio.create_task(keep_streaming())
    try:
        assert await closed_by_server(reader)
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, ssl.SSLError):
            await streaming
        writer.close()
    assert gateway.process is not None
    gateway.process.wait_for_log("session closed: the product may no longer connect", 5)
    if what != "delete account":  # synchronous with the change: nothing after it lands
        async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
            with pytest.raises(TimeoutError):
                await r.read_until(lambda rs: len(rs) > 1, timeout=3)


async def test_a_stream_updates_last_received(gateway: Gateway, tmp_path: Path) -> None:
    """ "Last Received" refreshes as soon as logs arrive: right after the first acknowledged
    batch, and at the end of the session for what was not reported yet."""
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    reader, writer = await gateway.syslog_connect(gateway.syslog_context(reg.credentials, tmp_path))
    writer.write(octets(b"<13>1 - h a - - - one") + octets(b"<13>1 - h a - - - two"))
    await writer.drain()
    async with TopicReader(gateway.kafka_bootstrap, topics.UPLOADS, gateway.prefix) as r:
        (first,) = await r.read_events(status_pb2.UploadReceived, 1, timeout=20)
        assert first.product_id == reg.product.product_id
        assert first.account_id == "acct-a"
        assert first.protocol == products_pb2.UPLOAD_PROTOCOL_SSL
        assert first.file_name.startswith("syslog-tls:") and first.finished_at.seconds > 0
        writer.write(octets(b"<13>1 - h a - - - three"))
        await writer.drain()
        await asyncio.sleep(0.6)  # batched and acknowledged: throttled, not reported yet
        writer.close()
        _, last = await r.read_events(status_pb2.UploadReceived, 2, timeout=20)
    assert first.records_accepted + last.records_accepted == 3
    assert last.file_name == first.file_name

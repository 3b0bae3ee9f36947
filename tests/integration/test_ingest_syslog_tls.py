"""Syslog over TLS (RFC 5425) with a Python TLS client holding the product's certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tmsp.events.v1 import detections_pb2, products_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.grpc_client import bearer
from tmsp_common.kafka import topics
from tmsp_common.testing import TopicReader
from tmsp_ingest.harness import Gateway

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.tls]


@pytest.fixture
async def gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        names.prefix,
        names.database("ingest"),
        tmp_path,
        extra_env={"TMSP_INGEST_SYSLOG_BATCH_SECONDS": "0.2"},
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


def client_context(gw: Gateway, creds: ingest_pb2.ServerCredentials, tmp: Path) -> ssl.SSLContext:
    cert, key = tmp / "client.pem", tmp / "client.key"
    cert.write_bytes(creds.client_certificate_pem)
    key.write_bytes(creds.client_private_key_pem)
    ca = tmp / "ca-from-registration.pem"
    ca.write_bytes(creds.ca_certificate_pem)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


def octets(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


async def test_rfc5425_stream_is_published(gateway: Gateway, tmp_path: Path) -> None:
    reg = await gateway.register(
        "acct-a", "owner@a.example", protocol=products_pb2.UPLOAD_PROTOCOL_SSL
    )
    context = client_context(gateway, reg.credentials, tmp_path)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.ports["syslog"], ssl=context, server_hostname="localhost"
    )
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
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.ports["syslog"], ssl=context, server_hostname="localhost"
    )
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
    old_context = client_context(gateway, reg.credentials, tmp_path)
    chan, stub = gateway.stub()
    await stub.RotateProductCredentials(
        ingest_pb2.RotateProductCredentialsRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    await chan.close()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.ports["syslog"], ssl=old_context, server_hostname="localhost"
    )
    writer.write(octets(b"<13>1 - h a - - - should not land"))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()

    bare = ssl.create_default_context(cafile=str(gateway.ca))
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.ports["syslog"], ssl=bare, server_hostname="localhost"
        )
        writer.write(octets(b"<13>1 - h a - - - no certificate"))
        await writer.drain()
        # TLS 1.3: the server's refusal arrives on the first read (alert or EOF).
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except (ssl.SSLError, ConnectionError):
        pass
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 0, timeout=3)

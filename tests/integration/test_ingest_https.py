"""The HTTPS log server, the status server and the admin API, against real Kafka and Mongo.

The gateway runs as deployed (``python -m tmsp_ingest``); uploads go through curl (also
through an HTTP CONNECT proxy, as appliances behind a proxy do), the admin API through gRPC
with a real signed token, metrics are scraped from the gateway's Prometheus endpoint.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tmsp.events.v1 import detections_pb2, products_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.authn import Principal, Role
from tmsp_common.grpc_client import bearer
from tmsp_common.kafka import topics
from tmsp_common.kafka.envelope import unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.testing import TopicReader, wait_until
from tmsp_ingest.harness import Gateway, curl, scrape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.tls,
    pytest.mark.grpc,
]

CEF = (
    b"CEF:0|Trend Micro|TDA|2.5|1001|Trojan in download|8|src=10.0.0.1 spt=1234 "
    b"dst=192.168.1.5 dpt=80 shost=ws-1 act=blocked cs1=with spaces\n"
    b"definitely not a log line\n"
    b'{"timestamp":"2026-11-20T09:00:00Z","event_type":"alert","src_ip":"1.1.1.1",'
    b'"alert":{"signature":"ET X","signature_id":7,"severity":2}}\n'
)


@pytest.fixture
async def gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap, infra.mongo_url, names.prefix, names.database("ingest"), tmp_path
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


@pytest.fixture
async def small_gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    """A gateway that accepts uploads of at most 64 KiB."""
    gw = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        names.prefix,
        names.database("ingest"),
        tmp_path / "small",
        extra_env={"TMSP_INGEST_MAX_UPLOAD_BYTES": str(64 * 1024)},
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


class _Tunnel(socketserver.BaseRequestHandler):
    """One HTTP CONNECT tunnel: read the request head, connect, answer 200, relay bytes."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        self.server.targets.append(target)  # type: ignore[attr-defined]
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                upstream.sendall(rest)
            peers = {self.request: upstream, upstream: self.request}
            while True:
                ready, _, _ = select.select(list(peers), [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)


@pytest.fixture
def connect_proxy() -> Iterator[socketserver.ThreadingTCPServer]:
    """A minimal HTTP CONNECT proxy on a free local port (``server_address[1]``)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
    server.daemon_threads = True
    server.targets = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_upload_over_https_is_acknowledged_with_counts_and_published(
    gateway: Gateway, tmp_path: Path
) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    creds = reg.credentials
    upload = tmp_path / "events.log"
    upload.write_bytes(CEF)
    user = f"{creds.user_name}:{creds.password}"

    status, _, body = curl(
        gateway, "-u", user, "--data-binary", f"@{upload}", "/v1/uploads?file=events.log"
    )
    assert status == 202, body
    answer = json.loads(body)
    assert (answer["accepted"], answer["rejected"], answer["duplicate"]) == (2, 1, False)

    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        dets = await r.read_events(detections_pb2.Detection, 2, timeout=20)
    assert {d.format for d in dets} == {
        detections_pb2.LOG_FORMAT_CEF,
        detections_pb2.LOG_FORMAT_SURICATA_EVE,
    }
    cef = next(d for d in dets if d.format == detections_pb2.LOG_FORMAT_CEF)
    assert cef.product_id == reg.product.product_id and cef.account_id == "acct-a"
    assert (cef.source.address, cef.destination.port, cef.extra["cs1"]) == (
        "10.0.0.1",
        80,
        "with spaces",
    )
    async with TopicReader(gateway.kafka_bootstrap, topics.INGEST_REJECTED, gateway.prefix) as r:
        (rejected,) = await r.read_until(lambda rs: len(rs) >= 1, timeout=20)
    headers = dict(rejected.headers)
    assert headers["tmsp-line"] == b"2" and headers["tmsp-reason"] == b"unknown format"
    assert headers["tmsp-file"] == b"events.log"
    assert headers["tmsp-product-id"] == reg.product.product_id.encode()
    assert headers["tmsp-account-id"] == b"acct-a"
    assert rejected.value == b"definitely not a log line"
    async with TopicReader(gateway.kafka_bootstrap, topics.UPLOADS, gateway.prefix) as r:
        (done,) = await r.read_events(status_pb2.UploadReceived, 1, timeout=20)
    assert (done.records_accepted, done.records_rejected, done.file_name) == (2, 1, "events.log")

    # The same content again: recognised, nothing published twice.
    status, _, body = curl(
        gateway, "-u", user, "--data-binary", f"@{upload}", "/v1/uploads?file=retry.log"
    )
    assert status == 202 and json.loads(body)["duplicate"] is True
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        await r.read_until(lambda rs: len(rs) >= 2, timeout=10)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 2, timeout=3)

    metrics = scrape(gateway)
    assert metrics['tmsp_ingest_records_accepted_total{format="cef",protocol="https"}'] == 1
    assert (
        metrics['tmsp_ingest_records_accepted_total{format="suricata_eve",protocol="https"}'] == 1
    )
    assert metrics['tmsp_ingest_records_rejected_total{format="unknown",protocol="https"}'] == 1
    assert metrics['tmsp_ingest_uploads_total{protocol="https",result="ok"}'] == 1
    assert metrics['tmsp_ingest_uploads_total{protocol="https",result="duplicate"}'] == 1
    assert metrics['tmsp_ingest_upload_bytes_total{protocol="https"}'] == 2 * len(CEF)
    assert metrics['tmsp_ingest_upload_seconds_count{protocol="https"}'] == 2


async def test_https_errors(gateway: Gateway, tmp_path: Path) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    status, headers, body = curl(gateway, "-u", f"{reg.credentials.user_name}:wrong",
                                 "--data-binary", "x", "/v1/uploads")  # fmt: skip
    assert status == 401 and json.loads(body) == {"error": "bad credentials"}
    assert headers["www-authenticate"].startswith("Basic")
    status, _, body = curl(gateway, "-u", user, "--data-binary", "x", "/v1/uploads?format=xml")
    assert status == 400 and "format" in json.loads(body)["error"]
    bad_gzip = tmp_path / "bad.gz"
    bad_gzip.write_bytes(b"\x1f\x8bnot gzip at all")
    status, _, body = curl(gateway, "-u", user, "--data-binary", f"@{bad_gzip}", "/v1/uploads")
    assert status == 400 and "gzip" in json.loads(body)["error"]
    # Oversize: the gateway allows 256 MiB by default; announce 300 MB.
    status, _, body = curl(
        gateway, "-u", user, "-H", "Content-Length: 300000000", "--data-binary", "x",
        "/v1/uploads",
    )  # fmt: skip
    assert status == 413
    # Throttle: after 10 failures from this address, even good credentials get 429.
    for _ in range(10):
        curl(gateway, "-u", "nobody:nothing", "/v1/test-connection")
    status, headers, body = curl(gateway, "-u", user, "/v1/test-connection")
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["status"] == "too many failed authentications"
    status, headers, body = curl(gateway, "-u", user, "--data-binary", "x", "/v1/uploads")
    assert status == 429 and int(headers["retry-after"]) >= 1
    metrics = scrape(gateway)
    bad = metrics['tmsp_ingest_auth_failures_total{protocol="https",reason="bad credentials"}']
    assert bad == 11
    reason = 'reason="too many failed authentications"'
    assert metrics['tmsp_ingest_auth_failures_total{protocol="https",' + reason + "}"] == 2


async def test_upload_and_heartbeat_through_an_http_connect_proxy(
    gateway: Gateway, tmp_path: Path, connect_proxy: socketserver.ThreadingTCPServer
) -> None:
    """An appliance behind a proxy tunnels TLS with CONNECT: nothing proxy-specific on our
    side, the TLS session (and HTTP Basic inside it) is end to end."""
    reg = await gateway.register("acct-a", "owner@a.example")
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    proxy = f"http://127.0.0.1:{connect_proxy.server_address[1]}"
    upload = tmp_path / "events.log"
    upload.write_bytes(CEF)
    status, _, body = curl(gateway, "-x", proxy, "-u", user, "--data-binary", f"@{upload}",
                           "/v1/uploads?file=events.log")  # fmt: skip
    assert status == 202 and json.loads(body)["accepted"] == 2, body
    status, _, body = curl(gateway, "-x", proxy, "-u", user, "--data", "{}", "/v1/heartbeat",
                           port="status")  # fmt: skip
    assert status == 200 and json.loads(body)["next_interval_seconds"] == 300
    targets = connect_proxy.targets  # type: ignore[attr-defined]
    assert targets == [
        f"127.0.0.1:{gateway.ports['https']}",
        f"127.0.0.1:{gateway.ports['status']}",
    ]


async def test_upload_bandwidth_is_enforced(gateway: Gateway, tmp_path: Path) -> None:
    """1024 B/s with a one-second burst: a 5 KiB body cannot be accepted in under 4 s."""
    reg = await gateway.register(
        "acct-a", "owner@a.example", upload_bandwidth_bytes_per_second=1024
    )
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    body = b"".join(
        b"CEF:0|TM|TDA|1|%d|Slow %d|5|src=10.0.0.1 msg=%s\n" % (i, i, b"x" * 60) for i in range(64)
    )
    assert len(body) >= 5 * 1024
    upload = tmp_path / "slow.log"
    upload.write_bytes(body)
    started = time.monotonic()
    status, _, answer = curl(gateway, "-u", user, "--data-binary", f"@{upload}", "/v1/uploads")
    elapsed = time.monotonic() - started
    assert status == 202 and json.loads(answer)["accepted"] == 64, answer
    assert elapsed >= (len(body) - 1024) / 1024 * 0.95


async def test_test_connection_reasons_and_heartbeats_with_tasks(gateway: Gateway) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    for port in ("https", "status"):
        status, _, body = curl(gateway, "-u", user, "/v1/test-connection", port=port)
        assert (status, json.loads(body)["status"]) == (200, "OK")
        status, _, body = curl(gateway, "-u", "x:y", "/v1/test-connection", port=port)
        assert (status, json.loads(body)["status"]) == (401, "bad credentials")

    task = status_pb2.MitigationTask(
        task_id="task-1",
        account_id="acct-a",
        product_id=reg.product.product_id,
        kind=status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
        parameters={"endpoint": "ws-1"},
    )
    async with EventProducer(
        gateway.kafka_bootstrap, service="portal", topic_prefix=gateway.prefix
    ) as producer:
        await producer.publish(topics.MITIGATION_TASKS, task, key=task.product_id)

    beat = json.dumps(
        {"product_version": "2.5", "uptime_seconds": 42, "security_compliance_enabled": True,
         "counters": {"logs_sent": 3}}
    )  # fmt: skip

    async def tasks_handed_out() -> list[dict[str, object]]:
        status, _, body = curl(gateway, "-u", user, "--data", beat, "/v1/heartbeat", port="status")
        assert status == 200, body
        tasks: list[dict[str, object]] = json.loads(body)["tasks"]
        return tasks

    tasks = await wait_until(tasks_handed_out, timeout=20, interval=0.5)
    assert tasks[0]["task_id"] == "task-1" and tasks[0]["parameters"] == {"endpoint": "ws-1"}
    ack = json.dumps({"product_version": "2.5", "uptime_seconds": 50,
                      "acknowledged_task_ids": ["task-1"]})  # fmt: skip
    status, _, body = curl(gateway, "-u", user, "--data", ack, "/v1/heartbeat", port="status")
    assert status == 200 and json.loads(body) == {"next_interval_seconds": 300, "tasks": []}
    async with TopicReader(gateway.kafka_bootstrap, topics.HEARTBEATS, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 2, timeout=20)
    beats = [unwrap(rec.value, status_pb2.Heartbeat)[1] for rec in records]
    assert beats[0].security_compliance_enabled and beats[0].counters["logs_sent"] == 3
    assert list(beats[-1].acknowledged_task_ids) == ["task-1"]

    # Disabled product and expired account: exact reasons.
    chan, stub = gateway.stub()
    await stub.DisableProduct(
        ingest_pb2.DisableProductRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    status, _, body = curl(gateway, "-u", user, "/v1/test-connection", port="status")
    assert (status, json.loads(body)["status"]) == (403, "product disabled")
    await stub.EnableProduct(
        ingest_pb2.EnableProductRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    await chan.close()
    await gateway.publish_account("acct-a", "owner@a.example", valid_days=-1, version=2)

    async def expired() -> bool:
        status, _, body = curl(gateway, "-u", user, "/v1/test-connection")
        return status == 403 and json.loads(body)["status"] == "account expired"

    await wait_until(expired, timeout=20, interval=0.5)


async def test_admin_api_tenancy_and_snapshots(gateway: Gateway) -> None:
    await gateway.publish_account("acct-b", "owner@b.example")
    reg = await gateway.register("acct-a", "owner@a.example", name="TDA one")
    chan, stub = gateway.stub()
    admin_b = gateway.token(Principal("u-b", "acct-b", frozenset({Role.ACCOUNT_ADMINISTRATOR})))
    admin_a = gateway.token(Principal("u-a", "acct-a", frozenset({Role.ACCOUNT_ADMINISTRATOR})))
    try:
        listed = await stub.ListProducts(
            ingest_pb2.ListProductsRequest(account_id="acct-a"), metadata=bearer(admin_a)
        )
        assert [p.product_id for p in listed.products] == [reg.product.product_id]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetProduct(
                ingest_pb2.GetProductRequest(product_id=reg.product.product_id),
                metadata=bearer(admin_b),
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RegisterProduct(
                ingest_pb2.RegisterProductRequest(account_id="acct-a"), metadata=bearer(admin_a)
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListProducts(ingest_pb2.ListProductsRequest(account_id="acct-a"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway.register("acct-a", "intruder@evil.example")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        rotated = await stub.RotateProductCredentials(
            ingest_pb2.RotateProductCredentialsRequest(product_id=reg.product.product_id),
            metadata=bearer(gateway.token()),
        )
        assert rotated.credentials.password != reg.credentials.password
        gone = await stub.DeregisterProduct(
            ingest_pb2.DeregisterProductRequest(product_id=reg.product.product_id),
            metadata=bearer(gateway.token()),
        )
        assert gone.product.state == products_pb2.PRODUCT_STATE_DEREGISTERED
        user = f"{reg.credentials.user_name}:{rotated.credentials.password}"
        status, _, body = curl(gateway, "-u", user, "/v1/test-connection")
        assert (status, json.loads(body)["status"]) == (403, "product deregistered")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.EnableProduct(
                ingest_pb2.EnableProductRequest(product_id=reg.product.product_id),
                metadata=bearer(gateway.token()),
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # The accounts projection refuses products of deleted or expired accounts.
        await gateway.publish_account("acct-d", "owner@d.example", deleted=True)
        await gateway.publish_account("acct-e", "owner@e.example", valid_days=-1)
        for account, reason in (("acct-d", "account deleted"), ("acct-e", "account expired")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await gateway.register(account, f"owner@{account[-1]}.example")
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.details() == reason
    finally:
        await chan.close()
    async with TopicReader(gateway.kafka_bootstrap, topics.PRODUCTS, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 3, timeout=20)
    snaps = [unwrap(rec.value, products_pb2.ProductSnapshot)[1] for rec in records]
    assert [s.version for s in snaps] == [1, 2, 3]
    assert snaps[-1].state == products_pb2.PRODUCT_STATE_DEREGISTERED
    assert all(s.server_user_name == reg.credentials.user_name for s in snaps)
    assert reg.credentials.password.encode() not in b"".join(rec.value for rec in records)


async def test_update_product_changes_settings_in_place_and_publishes_the_next_version(
    gateway: Gateway,
) -> None:
    """Seed 002/004's registration form, saved again: the product keeps its credentials, the
    status server asks heartbeats at the new interval, the next snapshot carries the change."""
    reg = await gateway.register("acct-a", "owner@a.example", name="TDA one")
    product_id, version = reg.product.product_id, reg.product.version
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    admin_a = gateway.token(Principal("u-a", "acct-a", frozenset({Role.ACCOUNT_ADMINISTRATOR})))
    chan, stub = gateway.stub()
    operator = bearer(gateway.token())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateProduct(
                ingest_pb2.UpdateProductRequest(product_id=product_id, name="x"),
                metadata=bearer(admin_a),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpdateProduct(
                ingest_pb2.UpdateProductRequest(product_id=product_id, upload_frequency_seconds=5),
                metadata=operator,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "upload_frequency_seconds" in (info.value.details() or "")
        updated = await stub.UpdateProduct(
            ingest_pb2.UpdateProductRequest(
                product_id=product_id,
                name="TDA one (HQ)",
                heartbeat_interval_seconds=60,
                upload_bandwidth_bytes_per_second=0,
                expected_version=version,
            ),
            metadata=operator,
        )
        p = updated.product
        assert (p.name, p.heartbeat_interval_seconds, p.version) == (
            "TDA one (HQ)",
            60,
            version + 1,
        )
        assert p.upload_frequency_seconds == reg.product.upload_frequency_seconds
        with pytest.raises(grpc.aio.AioRpcError) as info:  # a concurrent change is not lost
            await stub.UpdateProduct(
                ingest_pb2.UpdateProductRequest(
                    product_id=product_id, name="stale", expected_version=version
                ),
                metadata=operator,
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await chan.close()
    # the same credentials; heartbeats asked at the new interval
    status, _, body = curl(gateway, "-u", user, "/v1/test-connection")
    assert status == 200, body
    beat = json.dumps({"product_version": "2.5", "uptime_seconds": 1})
    status, _, body = curl(gateway, "-u", user, "--data", beat, "/v1/heartbeat", port="status")
    assert status == 200 and json.loads(body)["next_interval_seconds"] == 60
    async with TopicReader(gateway.kafka_bootstrap, topics.PRODUCTS, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 2, timeout=20)
    last = unwrap(records[-1].value, products_pb2.ProductSnapshot)[1]
    assert (last.product_id, last.name, last.version) == (product_id, "TDA one (HQ)", version + 1)


async def test_oversize_streamed_or_after_gunzip_is_413(
    small_gateway: Gateway, tmp_path: Path
) -> None:
    gw = small_gateway
    reg = await gw.register("acct-a", "owner@a.example")
    user = f"{reg.credentials.user_name}:{reg.credentials.password}"
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * (100 * 1024))
    # Chunked: no Content-Length to refuse up front, the limit holds while streaming.
    status, _, body = curl(gw, "-u", user, "-H", "Transfer-Encoding: chunked",
                           "--data-binary", f"@{big}", "/v1/uploads")  # fmt: skip
    assert status == 413 and "larger than 65536" in json.loads(body)["error"]
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"CEF:0|a|b|1|1|n|1|\n" * 20_000))
    assert bomb.stat().st_size < 64 * 1024
    status, _, body = curl(gw, "-u", user, "--data-binary", f"@{bomb}", "/v1/uploads")
    assert status == 413 and "decompressed" in json.loads(body)["error"]
    async with TopicReader(gw.kafka_bootstrap, topics.DETECTIONS, gw.prefix) as r:
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 0, timeout=2)

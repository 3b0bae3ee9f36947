"""The HTTPS log server's pattern and forensic endpoints over aiohttp's test server (plain
HTTP, in-memory adapters): status codes, headers, HEAD and conditional GET."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tmsp.events.v1 import status_pb2
from tmsp_ingest.adapters.http_servers import log_server_app
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import Kind
from tmsp_ingest.service_layer.gateway import Bandwidth, Gateway
from tmsp_ingest.testing import OPERATOR, REG, World

Client = TestClient[web.Request, web.Application]
CONTENT = b"delete HKLM\\Software\\Evil\n" * 100


@pytest.fixture
async def client(world: World) -> AsyncIterator[Client]:
    gateway = Gateway(
        world.auth,
        world.intake,
        world.status,
        Bandwidth(),
        world.intake.max_upload_bytes,
        world.forensics,
        world.patterns,
    )
    async with TestClient(TestServer(log_server_app(gateway))) as test_client:
        yield test_client


async def _login(world: World, kind: Kind) -> tuple[str, dict[str, str]]:
    product, creds = await world.registry.register(OPERATOR, replace(REG, kind=kind))
    token = base64.b64encode(f"{creds.user_name}:{creds.password}".encode()).decode()
    return product.product_id, {"Authorization": f"Basic {token}"}


async def test_pattern_download_headers_head_and_conditional_get(
    world: World, client: Client
) -> None:
    sha = hashlib.sha256(CONTENT).hexdigest()
    await world.patterns.apply(
        CleanupPattern("acct-a", "evil", CONTENT, sha, len(CONTENT), 1, False)
    )
    _, tmi = await _login(world, Kind.THREAT_MITIGATOR)
    _, tda = await _login(world, Kind.THREAT_DISCOVERY_APPLIANCE)

    got = await client.get("/v1/cleanup-patterns/evil", headers=tmi)
    assert got.status == 200 and await got.read() == CONTENT
    assert got.headers["ETag"] == f'"{sha}"' and got.headers["X-Content-SHA256"] == sha
    assert got.headers["Content-Type"] == "application/octet-stream"
    head = await client.head("/v1/cleanup-patterns/evil", headers=tmi)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(CONTENT)
    assert await head.read() == b""
    same = await client.get(
        "/v1/cleanup-patterns/evil", headers={**tmi, "If-None-Match": f'"{sha}"'}
    )
    assert same.status == 304 and await same.read() == b""
    for who, name, status in ((tda, "evil", 403), (tmi, "missing", 404), (tmi, ".x", 400)):
        refused = await client.get(f"/v1/cleanup-patterns/{name}", headers=who)
        assert refused.status == status and "error" in await refused.json()


async def test_forensic_post_answers_the_upload_and_refuses_before_the_body(
    world: World, client: Client
) -> None:
    product_id, tmi = await _login(world, Kind.THREAT_MITIGATOR)
    await world.tasks.add(
        status_pb2.MitigationTask(
            task_id="t-1",
            account_id="acct-a",
            product_id=product_id,
            kind=status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
        )
    )
    posted = await client.post(
        "/v1/forensic-data?task_id=t-1&file_name=mem.dmp", data=b"m" * 1000, headers=tmi
    )
    answer = await posted.json()
    assert posted.status == 201, answer
    assert (answer["size"], answer["chunks"], answer["task_id"]) == (1000, 1, "t-1")
    assert answer["content_sha256"] == hashlib.sha256(b"m" * 1000).hexdigest()
    assert [c.upload_id for c in world.publisher.chunks] == [answer["upload_id"]]
    too_big = await client.post(
        "/v1/forensic-data?task_id=t-1&file_name=big.dmp", data=b"b" * 2_000_001, headers=tmi
    )
    assert too_big.status == 413
    unknown = await client.post("/v1/forensic-data?task_id=t-2&file_name=a", data=b"x", headers=tmi)
    assert unknown.status == 404 and (await unknown.json())["error"] == "task not found"
    assert len(world.publisher.chunks) == 1

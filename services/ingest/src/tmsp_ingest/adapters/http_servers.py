"""The HTTPS log server (uploads, forensic data, cleanup pattern downloads, Test
Connection) and the HTTPS status server (heartbeats, Test Connection), both authenticated
with the product's credentials over HTTP Basic.

Answers: 202 (logs) or 201 (forensic data) only after Kafka acknowledged everything, 200
with a pattern's bytes; 400 with a JSON error for bad input, 401 for bad credentials, 403
when the product or its account may not connect (disabled, expired) or may not download
patterns (not a Threat Mitigator), 404 for an unknown task or pattern (also another
product's or account's), 409 for a task that is not a forensic data request, 413 for
oversized uploads, 429 with Retry-After when the source address is throttled after failed
authentications, 503 with Retry-After when Kafka is down or the gateway busy.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tmsp.events.v1 import products_pb2
from tmsp_common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tmsp_ingest import metrics
from tmsp_ingest.domain.bandwidth import DOWNLOAD_PIECE, pieces
from tmsp_ingest.domain.intake import FORMAT_NAMES, UploadTooLarge
from tmsp_ingest.domain.products import Refusal
from tmsp_ingest.service_layer.authenticate import Authenticated, AuthenticationFailed
from tmsp_ingest.service_layer.gateway import Gateway
from tmsp_ingest.service_layer.intake import Hold
from tmsp_ingest.service_layer.status import HeartbeatReport

READ_CHUNK = 256 * 1024
REFUSALS: tuple[tuple[type[Exception], int], ...] = (
    (UploadTooLarge, 413),
    (InvalidArgument, 400),
    (NotFound, 404),
    (PermissionDenied, 403),
    (FailedPrecondition, 409),
    (Unavailable, 503),
)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tmsp", charset="UTF-8"'
    if "retry_after" in extra:
        headers["Retry-After"] = str(max(1, int(extra.pop("retry_after") + 0.999)))
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _status_for(reason: str) -> int:
    if reason == Refusal.BAD_CREDENTIALS:
        return 401
    if reason == Refusal.TOO_MANY_FAILURES:
        return 429
    return 403


async def _authenticate(gateway: Gateway, request: web.Request, protocol: str) -> Authenticated:
    """Raises AuthenticationFailed with the exact reason."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthenticationFailed(Refusal.BAD_CREDENTIALS)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed(Refusal.BAD_CREDENTIALS) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise AuthenticationFailed(Refusal.BAD_CREDENTIALS)
    source = request.remote or "?"
    try:
        return await gateway.auth.with_password(user, password, source)
    except AuthenticationFailed as exc:
        metrics.AUTH_FAILURES.labels(protocol, exc.reason).inc()
        raise


Handler = Callable[[web.Request, Authenticated], Awaitable[web.StreamResponse]]


def _authenticated(
    gateway: Gateway, protocol: str, handler: Handler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            who = await _authenticate(gateway, request, protocol)
        except AuthenticationFailed as exc:
            if exc.retry_after:
                return _error(429, exc.reason, retry_after=exc.retry_after)
            return _error(_status_for(exc.reason), exc.reason)
        return await handler(request, who)

    return wrapped


async def _test_connection(gateway: Gateway, request: web.Request, protocol: str) -> web.Response:
    try:
        who = await _authenticate(gateway, request, protocol)
    except AuthenticationFailed as exc:
        headers = {"Retry-After": str(int(exc.retry_after + 0.999))} if exc.retry_after else {}
        return web.json_response(
            {"status": exc.reason}, status=_status_for(exc.reason), headers=headers
        )
    return web.json_response({"status": "OK", "product_id": who.product.product_id})


def _refusal(exc: DomainError | UploadTooLarge) -> web.Response:
    """A use case's refusal as an answer (503s carry Retry-After)."""
    status = next((code for kind, code in REFUSALS if isinstance(exc, kind)), 500)
    message = exc.message if isinstance(exc, DomainError) else str(exc)
    if status == 503:
        return _error(503, message, retry_after=5)
    return _error(status, message)


def _answering(handler: Handler) -> Handler:
    """``handler`` with the use cases' refusals answered by :func:`_refusal`."""

    async def wrapped(request: web.Request, who: Authenticated) -> web.StreamResponse:
        try:
            return await handler(request, who)
        except (DomainError, UploadTooLarge) as exc:
            return _refusal(exc)

    return wrapped


async def _read_body(
    gateway: Gateway, request: web.Request, who: Authenticated, hold: Hold, limit: int
) -> bytes:
    """The body, reserved in the upload buffer (the announced length up front, beyond
    that chunk by chunk) before it is read, at the product's upload bandwidth;
    UploadTooLarge beyond ``limit``, Unavailable when the buffer is full."""
    announced = request.content_length
    if announced is not None and announced > limit:
        raise UploadTooLarge(f"upload larger than {limit} bytes")
    await hold.add(announced or 0)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"upload larger than {limit} bytes")
        if size > (announced or 0):
            await hold.add(len(chunk))
        await gateway.bandwidth.upload(who.product, len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _etag_matches(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match", "")
    return any(tag.strip() in (etag, "*") for tag in wanted.split(",") if tag.strip())


def log_server_app(gateway: Gateway) -> web.Application:
    """``POST /v1/uploads`` (raw body; ``?file=`` names it, ``?format=`` forces a format),
    ``POST /v1/forensic-data?task_id=&file_name=`` (raw body, stored as is),
    ``GET /v1/cleanup-patterns/{name}`` and ``GET /v1/test-connection``."""

    async def upload(request: web.Request, who: Authenticated) -> web.StreamResponse:
        name = request.query.get("file") or request.headers.get("X-TMSP-File-Name") or "upload"
        if len(name) > 255 or "/" in name or "\0" in name:
            return _error(400, "file: bad file name")
        fmt_name = request.query.get("format", "auto").lower()
        forced = None
        if fmt_name != "auto":
            forced = FORMAT_NAMES.get(fmt_name)
            if forced is None:
                return _error(400, f"format: unknown format {fmt_name[:30]!r}")
        with gateway.intake.hold() as hold:
            body = await _read_body(gateway, request, who, hold, gateway.max_upload_bytes)
            if not body:
                return _error(400, "file: empty upload")
            outcome = await gateway.ingest(
                who.product,
                name,
                body,
                protocol=products_pb2.UPLOAD_PROTOCOL_SSL,
                protocol_label="https",
                forced_format=forced,
                hold=hold,
            )
        return web.json_response(
            {
                "accepted": outcome.accepted,
                "rejected": outcome.rejected,
                "duplicate": outcome.duplicate,
                "content_sha256": outcome.content_sha256,
            },
            status=202,
        )

    async def forensic_data(request: web.Request, who: Authenticated) -> web.StreamResponse:
        task_id = request.query.get("task_id", "")
        file_name = request.query.get("file_name", "")
        await gateway.forensics.accepts(who.product, task_id, file_name)  # before the body
        with gateway.intake.hold() as hold:
            body = await _read_body(gateway, request, who, hold, gateway.forensics.max_bytes)
            file = await gateway.forensic_upload(
                who.product,
                task_id,
                file_name,
                body,
                protocol=products_pb2.UPLOAD_PROTOCOL_SSL,
                protocol_label="https",
                hold=hold,
            )
        return web.json_response({**dataclasses.asdict(file), "chunks": file.count}, status=201)

    async def cleanup_pattern(request: web.Request, who: Authenticated) -> web.StreamResponse:
        pattern = await gateway.pattern(
            who.product, request.match_info["name"], protocol_label="https"
        )
        etag = f'"{pattern.content_sha256}"'
        headers = {"ETag": etag, "X-Content-SHA256": pattern.content_sha256}
        if _etag_matches(request, etag):
            return web.Response(status=304, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/octet-stream"
        response.content_length = pattern.size
        await response.prepare(request)
        if request.method != "HEAD":
            for piece in pieces(pattern.content, DOWNLOAD_PIECE):
                await gateway.bandwidth.download(who.product, len(piece))
                await response.write(piece)
        await response.write_eof()
        return response

    async def test_connection(request: web.Request) -> web.Response:
        return await _test_connection(gateway, request, "https")

    def route(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return _authenticated(gateway, "https", _answering(handler))

    app = web.Application(client_max_size=gateway.max_upload_bytes + 1)
    app.router.add_post("/v1/uploads", route(upload))
    app.router.add_post("/v1/forensic-data", route(forensic_data))
    app.router.add_get("/v1/cleanup-patterns/{name}", route(cleanup_pattern))
    app.router.add_get("/v1/test-connection", test_connection)
    return app


def _report(body: Any) -> HeartbeatReport:
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    version = body.get("product_version", "")
    uptime = body.get("uptime_seconds", 0)
    compliance = body.get("security_compliance_enabled")
    counters = body.get("counters", {})
    acks = body.get("acknowledged_task_ids", [])
    if not isinstance(version, str):
        raise InvalidArgument("product_version", "must be a string")
    if not isinstance(uptime, int) or isinstance(uptime, bool):
        raise InvalidArgument("uptime_seconds", "must be an integer")
    if compliance is not None and not isinstance(compliance, bool):
        raise InvalidArgument("security_compliance_enabled", "must be a boolean")
    if not isinstance(counters, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63
        for k, v in counters.items()
    ):
        raise InvalidArgument("counters", "must map names to integers")
    if not isinstance(acks, list) or not all(isinstance(a, str) for a in acks):
        raise InvalidArgument("acknowledged_task_ids", "must be a list of strings")
    return HeartbeatReport(version, uptime, compliance, counters, acks)


def status_server_app(gateway: Gateway) -> web.Application:
    """``POST /v1/heartbeat`` (JSON) and ``GET /v1/test-connection``."""

    async def heartbeat(request: web.Request, who: Authenticated) -> web.StreamResponse:
        try:
            report = _report(json.loads(await request.read() or b"{}"))
            answer = await gateway.status.heartbeat(who.product, report)
        except json.JSONDecodeError:
            metrics.HEARTBEATS.labels("bad").inc()
            return _error(400, "body: invalid JSON")
        except InvalidArgument as exc:
            metrics.HEARTBEATS.labels("bad").inc()
            return _error(400, exc.message)
        except Unavailable as exc:
            metrics.HEARTBEATS.labels("failed").inc()
            return _error(503, exc.message, retry_after=5)
        metrics.HEARTBEATS.labels("ok").inc()
        return web.json_response(
            {
                "next_interval_seconds": answer.next_interval_seconds,
                "tasks": [
                    {
                        "task_id": t.task_id,
                        "kind": t.kind,
                        "parameters": dict(t.parameters),
                        "created_at": t.created_at.ToJsonString()
                        if t.HasField("created_at")
                        else None,
                    }
                    for t in answer.tasks
                ],
            }
        )

    async def test_connection(request: web.Request) -> web.Response:
        return await _test_connection(gateway, request, "status")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/v1/heartbeat", _authenticated(gateway, "status", heartbeat))
    app.router.add_get("/v1/test-connection", test_connection)
    return app


async def start_https(
    app: web.Application, host: str, port: int, context: ssl.SSLContext
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (for cleanup) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound

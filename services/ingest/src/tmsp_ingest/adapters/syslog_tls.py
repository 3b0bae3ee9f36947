"""Syslog over TLS (RFC 5425) for appliances that stream.

The client must present a certificate issued by the deployment's CA at registration; its CN
is the product id and its SHA-256 must be the product's current certificate (rotation
revokes). Messages are framed (octet counting or LF), batched (by count or time) and each
batch is published and acknowledged by Kafka before more is read from the socket, which is
the backpressure: a slow broker slows the sender, memory stays bounded. A batch Kafka does
not acknowledge within the intake's ``ack_timeout`` closes the session.

Before each batch the product's standing is confirmed again (at most every
``recheck_seconds``): a rotated certificate, a disabled or deregistered product, a deleted or
expired account close a session that is already open. "Last Received" is reported by the
session's :class:`~tmsp_ingest.service_layer.intake.Stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import uuid

from cryptography import x509
from cryptography.x509.oid import NameOID

from tmsp.events.v1 import products_pb2
from tmsp_common.errors import Unavailable
from tmsp_common.logging import get_logger
from tmsp_ingest import metrics
from tmsp_ingest.domain.framing import FrameDecoder, FramingError
from tmsp_ingest.service_layer.authenticate import (
    Authenticated,
    AuthenticationFailed,
    SessionStanding,
)
from tmsp_ingest.service_layer.gateway import Gateway
from tmsp_ingest.service_layer.intake import Stream

log = get_logger(__name__)
READ_SIZE = 64 * 1024


def client_identity(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(product id from the certificate's CN, certificate SHA-256)."""
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj else None
    if not der:
        raise AuthenticationFailed("bad credentials")
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise AuthenticationFailed("bad credentials")
    return str(names[0].value), hashlib.sha256(der).hexdigest()


class SyslogTlsServer:
    def __init__(
        self,
        gateway: Gateway,
        *,
        max_frame: int,
        batch_lines: int,
        batch_seconds: float,
        recheck_seconds: float = 5.0,
    ) -> None:
        self.gateway = gateway
        self.max_frame = max_frame
        self.batch_lines = batch_lines
        self.batch_seconds = batch_seconds
        self.recheck_seconds = recheck_seconds
        self.sessions: set[asyncio.Task[None]] = set()

    @staticmethod
    async def _flush(stream: Stream, lines: list[bytes], nbytes: int) -> None:
        stats = await stream.publish(lines, nbytes)
        for label, count in stats.accepted.items():
            metrics.RECORDS_ACCEPTED.labels(label, "syslog-tls").inc(count)
        for label, count in stats.rejected.items():
            metrics.RECORDS_REJECTED.labels(label, "syslog-tls").inc(count)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.sessions.add(task)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        metrics.ACTIVE_SESSIONS.labels("syslog-tls").inc()
        try:
            try:
                product_id, fingerprint = client_identity(writer)
                who = await self.gateway.auth.with_certificate(product_id, fingerprint, source)
            except AuthenticationFailed as exc:
                metrics.AUTH_FAILURES.labels("syslog-tls", exc.reason).inc()
                log.info("syslog client refused", reason=exc.reason, source=source)
                return
            await self._serve(who, reader)
        finally:
            metrics.ACTIVE_SESSIONS.labels("syslog-tls").dec()
            writer.close()
            with contextlib.suppress(Exception):  # peer may already be gone
                await writer.wait_closed()
            if task is not None:
                self.sessions.discard(task)

    async def _serve(self, who: Authenticated, reader: asyncio.StreamReader) -> None:
        session = f"syslog-tls:{uuid.uuid4().hex}"
        standing = SessionStanding(self.gateway.auth, who, "syslog-tls", self.recheck_seconds)
        stream = self.gateway.intake.stream(who.product, session, products_pb2.UPLOAD_PROTOCOL_SSL)
        try:
            await self._pump(standing, stream, reader)
        finally:
            try:
                await stream.close()
            except Unavailable as exc:
                log.warning("syslog session end not reported", reason=exc.message)

    async def _pump(
        self, standing: SessionStanding, stream: Stream, reader: asyncio.StreamReader
    ) -> None:
        """Read, frame and publish until the client closes, the framing breaks, Kafka does
        not acknowledge a batch or the product loses its standing."""
        decoder = FrameDecoder(self.max_frame)
        batch: list[bytes] = []
        nbytes = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_seconds
        while True:
            timeout = max(0.0, deadline - loop.time()) if batch else None
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            except TimeoutError:
                data = None
            except (ConnectionError, ssl.SSLError):
                data = b""
            if data:
                metrics.UPLOAD_BYTES.labels("syslog-tls").inc(len(data))
                await self.gateway.bandwidth.upload(standing.who.product, len(data))
                nbytes += len(data)
                try:
                    batch.extend(decoder.feed(data))
                except FramingError as exc:
                    log.info(
                        "syslog framing error",
                        product_id=standing.who.product.product_id,
                        reason=str(exc),
                    )
                    data = b""
            closing = data == b""
            if batch and (closing or data is None or len(batch) >= self.batch_lines):
                try:
                    await standing.confirm()
                    await self._flush(stream, batch, nbytes)
                except AuthenticationFailed:
                    return  # logged by confirm(); the batch is not published
                except Unavailable as exc:
                    # Nothing more is read: the sender's own buffer holds the rest.
                    log.warning("syslog batch not acknowledged", reason=exc.message)
                    return
                batch, nbytes = [], 0
            if closing:
                return
            if not batch:
                deadline = loop.time() + self.batch_seconds


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """TLS 1.2+ requiring a client certificate signed by the deployment's CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context

"""The SMTP sender (aiosmtplib): plain, STARTTLS or implicit TLS, optional authentication.

A small pool of connections is kept open between mails. Errors are classified for the
delivery use case: connection trouble and 4xx replies are transient, 5xx permanent.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from tmsp_notifier.service_layer.ports import PermanentSendError, TransientSendError

Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    security: Security = "none"
    username: str = ""
    password: str = ""
    timeout_s: float = 10.0
    validate_certs: bool = True
    ca_file: str = ""
    connections: int = 4
    local_hostname: str | None = None


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


class SmtpSender:
    """Implements ``MailSender`` over a pool of aiosmtplib connections."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(max(1, config.connections))

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.security == "none":
            return None
        ctx = ssl.create_default_context(cafile=self.config.ca_file or None)
        if not self.config.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.security == "tls",
            start_tls=c.security == "starttls",
            tls_context=self._tls_context(),
            validate_certs=c.validate_certs,
            username=c.username or None,
            password=c.password or None,
            timeout=c.timeout_s,
            local_hostname=c.local_hostname,
        )
        await client.connect()
        return client

    async def send(self, message: EmailMessage) -> str:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            reused = client is not None
            try:
                if client is None or not client.is_connected:
                    client, reused = await self._connect(), False
                try:
                    reply = await self._send_on(client, message)
                except TransientSendError as exc:
                    if not (reused and exc.connection):
                        raise
                    # An idle pooled connection the server closed: one fresh try at once.
                    await _close(client)
                    client = await self._connect()
                    reply = await self._send_on(client, message)
            except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
                await _close(client)
                raise TransientSendError(f"connection: {exc}", connection=True) from exc
            except aiosmtplib.SMTPAuthenticationError as exc:
                await _close(client)
                raise TransientSendError(f"authentication: {_reply(exc)}") from exc
            except aiosmtplib.SMTPResponseException as exc:
                await _close(client)
                if 400 <= exc.code < 500:
                    raise TransientSendError(_reply(exc)) from exc
                raise PermanentSendError(_reply(exc)) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await _close(client)
                raise TransientSendError(
                    f"connection: {type(exc).__name__}: {exc}", connection=True
                ) from exc
            except BaseException:
                await _close(client)
                raise
            self._idle.append(client)
            return reply

    async def _send_on(self, client: aiosmtplib.SMTP, message: EmailMessage) -> str:
        try:
            errors, response = await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await client.rset()
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if codes and all(400 <= c < 500 for c in codes):
                raise TransientSendError(text) from exc
            raise PermanentSendError(text) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError) as exc:
            raise TransientSendError(f"connection: {exc}", connection=True) from exc
        refused = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in errors.items())
        return f"250 {response}" + (f" (refused: {refused})" if refused else "")

    async def close(self) -> None:
        while self._idle:
            await _close(self._idle.pop())


async def _close(client: aiosmtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), 2)
    except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
        client.close()

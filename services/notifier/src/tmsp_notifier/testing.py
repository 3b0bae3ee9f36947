"""A real SMTP server on loopback for tests and benchmarks (aiosmtpd, a dev dependency).

:class:`RecordingSmtpServer` records every accepted message and can be told to answer
4xx/5xx for the next messages, to delay its answer, or be stopped and started again on the
same port (the "SMTP down" case).
"""

from __future__ import annotations

import email
import email.policy
import hmac
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    accepted_at: float


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    reply_delay_s: float = 0.0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)
        with self.lock:
            if self.script:
                self.refused += 1
                return self.script.pop(0)
            content = envelope.original_content or envelope.content
            msg = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)  # noqa: S101 - policy.default makes these
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), msg, time.monotonic())
            )
        if self.reply_delay_s:
            import asyncio

            await asyncio.sleep(self.reply_delay_s)  # accepted, but the client hears it late
        return "250 2.0.0 OK queued"


class RecordingSmtpServer:
    """``with RecordingSmtpServer(port) as smtp: ...``; ``smtp.port`` is the bound port."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        security: str = "none",
        ssl_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """``security``: ``none``, ``starttls`` (required) or ``tls`` (implicit, needs a context);
        ``credentials``: AUTH required with this user name and password."""
        self.host = host
        self.port = port
        self.security = security
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.handler = _Handler()
        self.logins: list[str] = []
        self._controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.credentials is not None  # noqa: S101 - only installed with credentials
        user, password = self.credentials
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, user.encode())
            and hmac.compare_digest(auth_data.password, password.encode())
        )
        if ok:
            self.logins.append(user)
        return AuthResult(success=ok, handled=False)

    def start(self) -> RecordingSmtpServer:
        kwargs: dict[str, Any] = {"data_size_limit": 50 * 1024 * 1024}
        if self.security == "tls":
            kwargs["ssl_context"] = self.ssl_context
            kwargs["server_hostname"] = "localhost"
        elif self.security == "starttls":
            kwargs["tls_context"] = self.ssl_context
            kwargs["require_starttls"] = True
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # implicit TLS: aiosmtpd does not see the transport as TLS, AUTH must be allowed
            kwargs["auth_require_tls"] = self.security == "starttls"
        self._controller = Controller(self.handler, hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> RecordingSmtpServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler.lock:
            return [r.message for r in self.handler.received]

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def answer_next(self, *replies: str) -> None:
        """The next messages get these replies (e.g. ``"451 4.3.0 later"``) instead of 250."""
        with self.handler.lock:
            self.handler.script.extend(replies)

    def set_delay(self, seconds: float) -> None:
        """Wait this long before accepting each message."""
        self.handler.delay_s = seconds

    def set_reply_delay(self, seconds: float) -> None:
        """Record each message at once but answer 250 only after this long: a client that
        dies meanwhile never learns its mail was accepted (the duplicate window)."""
        self.handler.reply_delay_s = seconds

    def message_ids(self) -> Counter[str]:
        return Counter(str(m["Message-ID"]) for m in self.messages)

    def by_message_id(self, message_id: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["Message-ID"] == message_id]


def notifier_env(
    *,
    infra_env: dict[str, str],
    prefix: str,
    database: str,
    smtp_port: int,
    grpc_port: int,
    tls_dir: str,
    public_keys: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """Environment for ``python -m tmsp_notifier`` in integration tests and benchmarks."""
    import json

    env = {
        **infra_env,
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_NOTIFIER_MONGO_DATABASE": database,
        "TMSP_NOTIFIER_CONSUMER_GROUP": f"{prefix}notifier",
        "TMSP_NOTIFIER_SMTP_HOST": "127.0.0.1",
        "TMSP_NOTIFIER_SMTP_PORT": str(smtp_port),
        "TMSP_NOTIFIER_SMTP_TIMEOUT_S": "3",
        "TMSP_NOTIFIER_GRPC_PORT": str(grpc_port),
        "TMSP_NOTIFIER_METRICS_PORT": "0",
        "TMSP_NOTIFIER_RETRY_INITIAL_S": "0.1",
        "TMSP_NOTIFIER_RETRY_MAX_S": "0.5",
        "TMSP_NOTIFIER_DIGEST_INTERVAL_S": "1",
        "TMSP_NOTIFIER_SUBSCRIPTION_CHECK_INTERVAL_S": "1",
        "TMSP_TLS_DIR": tls_dir,
        "TMSP_NOTIFIER_AUTH_PUBLIC_KEYS": json.dumps(public_keys or {}),
    }
    env.update({f"TMSP_NOTIFIER_{k.upper()}": v for k, v in extra.items()})
    return env

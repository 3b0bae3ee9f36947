"""Helpers for auth's integration tests and benchmark: run the service, read its mail.

Everything here talks to the real service over gRPC and reads the real Kafka topics.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pyotp

from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc
from tmsp.events.v1 import notifications_pb2
from tmsp_auth.domain.crypto import Keyring
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka.envelope import unwrap
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS, Topic
from tmsp_common.testing import REPO_ROOT, ServiceProcess, TopicReader, free_port, unique

TEST_ARGON2_MEMORY_KIB = "1024"
"""Cheaper (still argon2id) parameters for tests; the default stays at OWASP's 19 MiB."""


def service_env(
    infra_env: Mapping[str, str], prefix: str, database: str, tls_dir: Path, **extra: str
) -> dict[str, str]:
    return {
        **infra_env,
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_AUTH_MONGO_DATABASE": database,
        "TMSP_AUTH_GRPC_PORT": str(free_port()),
        "TMSP_AUTH_GRPC_HOST": "127.0.0.1",
        "TMSP_TLS_DIR": str(tls_dir),
        "TMSP_AUTH_ENCRYPTION_KEYS": Keyring.generate_spec("it1"),
        "TMSP_AUTH_ARGON2_MEMORY_KIB": TEST_ARGON2_MEMORY_KIB,
        "TMSP_AUTH_ARGON2_TIME_COST": "1",
        "TMSP_AUTH_CODE_RESEND_SECONDS": "2",
        "TMSP_AUTH_SECURITY_EVENTS_GROUP": f"{prefix}auth-security-events",
        "TMSP_METRICS_PORT": "0",
        **extra,
    }


def run_cli(env: Mapping[str, str], args: list[str], password: str) -> str:
    """Run the admin CLI as an operator would; returns its output (raises on failure)."""
    import os

    result = subprocess.run(  # noqa: S603 - fixed module, arguments from the test
        [sys.executable, "-m", "tmsp_auth.entrypoints.cli", *args],
        input=password + "\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cli {args[0]} failed ({result.returncode}): {result.stderr[-12000:]}")
    return result.stdout


class Mailbox:
    """Reads NotificationRequests (what the notifier would email) from the real topic."""

    def __init__(self, bootstrap: str, prefix: str, topic: Topic = NOTIFICATION_REQUESTS) -> None:
        self._reader = TopicReader(bootstrap, topic, prefix)
        self._seen: set[str] = set()

    async def __aenter__(self) -> Mailbox:
        await self._reader.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._reader.__aexit__(*exc)

    def _all(self) -> list[notifications_pb2.NotificationRequest]:
        return [
            unwrap(r.value, notifications_pb2.NotificationRequest)[1] for r in self._reader.records
        ]

    async def next(
        self, kind: int, recipient: str, timeout: float = 20.0
    ) -> notifications_pb2.NotificationRequest:
        """The first not-yet-taken request of ``kind`` to ``recipient``."""

        def match() -> notifications_pb2.NotificationRequest | None:
            for n in self._all():
                if (
                    n.kind == kind
                    and recipient.lower() in [r.lower() for r in n.recipients]
                    and n.notification_id not in self._seen
                ):
                    return n
            return None

        await self._reader.read_until(lambda _records: match() is not None, timeout)
        found = match()
        assert found is not None  # noqa: S101 - read_until guarantees it
        self._seen.add(found.notification_id)
        return found

    def count(self, kind: int, recipient: str) -> int:
        return sum(
            1
            for n in self._all()
            if n.kind == kind and recipient.lower() in [r.lower() for r in n.recipients]
        )


@dataclass
class AuthClient:
    """Stubs on one channel to the running service."""

    target: str
    tls_dir: str
    chan: grpc.aio.Channel = field(init=False)
    auth: Any = field(init=False)
    """``AuthServiceStub`` (typed Any: the generated stubs have no async annotations)."""
    accounts: Any = field(init=False)

    def __post_init__(self) -> None:
        self.chan = channel(self.target, tls=True, tls_dir=self.tls_dir)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.chan)
        self.accounts = auth_pb2_grpc.AccountServiceStub(self.chan)

    async def close(self) -> None:
        await self.chan.close()

    async def login(self, email: str, password: str) -> auth_pb2.LoginResponse:
        response: auth_pb2.LoginResponse = await self.auth.Login(
            auth_pb2.LoginRequest(email=email, password=password)
        )
        return response

    async def session(self, email: str, password: str) -> auth_pb2.Session:
        response = await self.login(email, password)
        assert response.HasField("session")  # noqa: S101
        return response.session


def md(session: auth_pb2.Session | str) -> tuple[tuple[str, str], ...]:
    token = session if isinstance(session, str) else session.access_token
    return bearer(token)


def secret_from_uri(uri: str) -> str:
    return parse_qs(urlsplit(uri).query)["secret"][0]


def code_for_step(secret: str, offset_steps: int = 0) -> str:
    """The code ``offset_steps`` from now; waits out the last second of a step, so the
    server (a few ms later) sees the same step and the test cannot flake on a boundary."""
    if time.time() % 30 > 28.5:
        time.sleep(1.6)
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def new_password() -> str:
    return f"pw-{unique('x')}-Tr0ub4dor"


async def error_of(call: Callable[[], Any]) -> grpc.aio.AioRpcError:
    """Await ``call()`` and return the gRPC error it raised (AssertionError if none)."""
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("expected a gRPC error")


def start_service(env: Mapping[str, str]) -> ServiceProcess:
    proc = ServiceProcess("tmsp_auth", env=env).start()
    proc.wait_for_log("service ready", timeout=60)
    return proc

"""gRPC channels to auth, the portal (reporter), ingest and the notifier, over TLS with the
local CA.

One interceptor per channel adds the bearer access token (asked for at each call, so an
access token about to expire is refreshed first), a default deadline, and remembers which
RPC went to which target: the error a failed call raises is then reported as one line
naming the RPC, or the target when it was unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tmsp.auth.v1 import auth_pb2_grpc
from tmsp.ingest.v1 import ingest_pb2_grpc
from tmsp.notifier.v1 import notifier_pb2_grpc
from tmsp.reporter.v1 import reporter_pb2_grpc
from tmsp_common.grpc_client import bearer

UNARY_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 900.0
"""Deadlines of calls that do not set one: answers, and whole downloads."""

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class MissingCA(Exception):
    """The TLS directory has no CA certificate: the client never connects unverified."""


@dataclass(frozen=True)
class Targets:
    """Where each service listens, and the directory whose ``ca.pem`` verifies them.
    ``notifier`` is empty in sessions saved before the client knew of it (the default)."""

    auth: str
    portal: str
    ingest: str
    tls_dir: str
    notifier: str = ""

    def ca_pem(self) -> bytes:
        path = Path(self.tls_dir) / "ca.pem"
        try:
            return path.read_bytes()
        except OSError:
            raise MissingCA(
                f"no CA certificate at {path}: set TMSP_TLS_DIR or --tls-dir to the directory "
                "holding the portal's ca.pem"
            ) from None


@dataclass(frozen=True)
class CallRecord:
    """The last RPC started: its name, which service, and where."""

    rpc: str
    service: str
    target: str


@dataclass
class CallLog:
    last: CallRecord | None = None


@dataclass(frozen=True)
class _Details(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(
        self, service: str, target: str, log: CallLog, token: Callable[[], str] | None
    ) -> None:
        self.service = service
        self.target = target
        self.log = log
        self.token = token

    def _details(self, details: grpc.ClientCallDetails, timeout: float) -> _Details:
        metadata = list(details.metadata or ())
        if self.token is not None:
            metadata.extend(bearer(self.token()))  # may call Refresh first
        self.log.last = CallRecord(details.method.rsplit("/", 1)[-1], self.service, self.target)
        return _Details(
            details.method,
            details.timeout if details.timeout is not None else timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details, UNARY_TIMEOUT_S), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details, STREAM_TIMEOUT_S), request)


@dataclass
class Connection:
    """Stubs over one TLS channel per service. ``token`` gives the access token for every
    call but the public auth ones (Login, VerifySecondFactor, RequestEmergencyCode,
    Refresh), which go through ``public``."""

    targets: Targets
    token: Callable[[], str] | None = None
    log: CallLog = field(default_factory=CallLog)
    _channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.targets
        creds = grpc.ssl_channel_credentials(root_certificates=t.ca_pem())
        auth = self._channel(creds, t.auth)
        self.public = auth_pb2_grpc.AuthServiceStub(self._intercept(auth, "auth", t.auth, None))
        authed = self._intercept(auth, "auth", t.auth, self._token)
        self.auth = auth_pb2_grpc.AuthServiceStub(authed)
        self.accounts = auth_pb2_grpc.AccountServiceStub(authed)
        portal = self._intercept(self._channel(creds, t.portal), "portal", t.portal, self._token)
        self.portal = reporter_pb2_grpc.ReporterServiceStub(portal)
        ingest = self._intercept(self._channel(creds, t.ingest), "ingest", t.ingest, self._token)
        self.ingest = ingest_pb2_grpc.ProductRegistryServiceStub(ingest)
        notifier = self._intercept(
            self._channel(creds, t.notifier), "notifier", t.notifier, self._token
        )
        self.notifier = notifier_pb2_grpc.NotificationSettingsServiceStub(notifier)

    def _channel(self, creds: grpc.ChannelCredentials, target: str) -> grpc.Channel:
        chan = grpc.secure_channel(target, creds)
        self._channels.append(chan)
        return chan

    def _intercept(
        self, chan: grpc.Channel, service: str, target: str, token: Callable[[], str] | None
    ) -> grpc.Channel:
        return grpc.intercept_channel(chan, _Interceptor(service, target, self.log, token))

    def _token(self) -> str:
        if self.token is None:
            raise RuntimeError("no access token source")
        return self.token()

    def close(self) -> None:
        for chan in self._channels:
            chan.close()


def describe_error(exc: grpc.RpcError, call: CallRecord | None) -> str:
    """One line: ``<RPC>: <STATUS_CODE> <details>``, or, when the server could not be
    reached, which service at which target."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    details = re.sub(r"\s+", " ", details or "").strip()
    name = code.name if code is not None else "UNKNOWN"
    rpc = call.rpc if call else "call"
    if code is grpc.StatusCode.UNAVAILABLE and call is not None:
        return f"cannot reach {call.service} at {call.target} ({rpc}: {name} {details})"
    return f"{rpc}: {name} {details}".rstrip()

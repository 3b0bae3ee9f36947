"""A key source for :class:`tmsp_common.tokens.JwtVerifier` backed by auth's GetSigningKeys.

Usage in a service that verifies access tokens::

    verifier = JwtVerifier(grpc_key_source("auth:50051", tls=True, tls_dir=settings.tls_dir))

The verifier calls the source at start-up (``await verifier.refresh()``) and again when a
token names an unknown ``kid`` (rate limited), which is how auth's key rotation reaches every
service without a restart. A failed fetch raises :class:`Unavailable`; the verifier's current
keys stay in use.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from tmsp_common.errors import Unavailable
from tmsp_common.grpc_client import channel
from tmsp_common.tokens import JwtVerifier, KeySource, static_keys


def grpc_key_source(
    target: str, *, tls: bool = True, tls_dir: str = ".local/tls", timeout_s: float = 5.0
) -> KeySource:
    """A key source calling ``tmsp.auth.v1.AuthService/GetSigningKeys`` at ``target``."""
    from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc

    chan: grpc.aio.Channel | None = None

    async def _source() -> Mapping[str, bytes]:
        nonlocal chan
        if chan is None:
            chan = channel(target, tls=tls, tls_dir=tls_dir)
        stub = auth_pb2_grpc.AuthServiceStub(chan)
        try:
            response = await stub.GetSigningKeys(
                auth_pb2.GetSigningKeysRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"cannot fetch signing keys from auth at {target}: {exc.code().name}"
            ) from exc
        return {k.kid: k.public_key_pem.encode() for k in response.keys}

    return _source


def token_verifier(
    pinned: Mapping[str, bytes], target: str, *, tls: bool = True, tls_dir: str = ".local/tls"
) -> JwtVerifier:
    """Pinned ``{kid: PEM}`` keys when configured, otherwise auth's GetSigningKeys at
    ``target`` (fetched on first use and on an unknown ``kid``)."""
    if pinned:
        return JwtVerifier(static_keys(pinned))
    return JwtVerifier(grpc_key_source(target, tls=tls, tls_dir=tls_dir))

"""Client channels to TMSP gRPC services, with the local CA when TLS is on."""

from __future__ import annotations

from pathlib import Path

import grpc

from tmsp_common.tls import ensure_ca


def channel(target: str, *, tls: bool = True, tls_dir: str = ".local/tls") -> grpc.aio.Channel:
    """An asyncio channel to ``target`` trusting the local CA (or plaintext if ``tls=False``)."""
    if not tls:
        return grpc.aio.insecure_channel(target)
    ca_path, _ = ensure_ca(tls_dir)
    creds = grpc.ssl_channel_credentials(root_certificates=Path(ca_path).read_bytes())
    return grpc.aio.secure_channel(target, creds)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"),)

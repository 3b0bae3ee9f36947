"""Helpers for the reporter's integration tests and benchmark (no pytest import here)."""

from __future__ import annotations

import json


def reporter_env(
    *,
    infra_env: dict[str, str],
    prefix: str,
    database: str,
    grpc_port: int,
    tls_dir: str,
    public_keys: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """Environment for ``python -m tmsp_reporter`` in integration tests and benchmarks."""
    env = {
        **infra_env,
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_REPORTER_MONGO_DATABASE": database,
        "TMSP_REPORTER_CONSUMER_GROUP": f"{prefix}reporter",
        "TMSP_REPORTER_GRPC_PORT": str(grpc_port),
        "TMSP_REPORTER_METRICS_PORT": "0",
        "TMSP_TLS_DIR": tls_dir,
        "TMSP_REPORTER_AUTH_PUBLIC_KEYS": json.dumps(public_keys or {}),
        "TMSP_REPORTER_SCHEDULE_INTERVAL_S": "1",
    }
    env.update({f"TMSP_REPORTER_{k.upper()}": v for k, v in extra.items()})
    return env

"""Auth's own Prometheus metrics (gRPC and Kafka metrics come from tmsp_common)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LOGIN_ATTEMPTS = Counter(
    "tmsp_auth_login_attempts_total",
    "Login steps by outcome (password_ok, challenge, failed, refused_locked, unknown_user, "
    "second_factor_ok, second_factor_failed)",
    ["outcome"],
)
LOCKOUTS = Counter("tmsp_auth_lockouts_total", "Users locked out after too many failures")
PASSWORD_HASH_SECONDS = Histogram(
    "tmsp_auth_password_hash_seconds",
    "argon2id hash or verification time",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
)
CODES_SENT = Counter("tmsp_auth_codes_sent_total", "Codes and links emailed", ["kind"])

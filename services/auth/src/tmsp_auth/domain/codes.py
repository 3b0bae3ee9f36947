"""Single-use secrets: confirmation, emergency and recovery codes, reset tokens, refresh tokens.

Only a keyed hash (HMAC-SHA256 with a server-side pepper) is stored, so a copy of the
database does not let anyone brute-force the short numeric codes offline. Comparison is in
constant time. Expiry and attempt limits are checked against an injected clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class CodePurpose(StrEnum):
    TWO_FACTOR_SETUP = "two_factor_setup"
    EMERGENCY = "emergency"


@dataclass(frozen=True)
class CodeRules:
    """Lifetime and limits of one kind of emailed code."""

    ttl: timedelta = timedelta(minutes=10)
    max_attempts: int = 5
    resend_interval: timedelta = timedelta(seconds=60)
    digits: int = 8


class CodeHasher:
    """Keyed hashing of codes and tokens (pepper from the encryption key)."""

    def __init__(self, pepper: bytes) -> None:
        self._pepper = pepper

    def digest(self, value: str) -> str:
        normalized = value.strip().replace(" ", "").replace("-", "").lower()
        return hmac.new(self._pepper, normalized.encode(), hashlib.sha256).hexdigest()

    def matches(self, stored: str, value: str) -> bool:
        return hmac.compare_digest(stored, self.digest(value))


def numeric_code(digits: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(digits))


_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def recovery_code() -> str:
    """10 characters from an unambiguous alphabet (~49 bits), shown as xxxxx-xxxxx."""
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def recovery_codes(count: int = 10) -> list[str]:
    return [recovery_code() for _ in range(count)]


def token() -> str:
    """A 256-bit URL-safe token (reset links, refresh tokens, challenge ids)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class IssuedCode:
    """A code as stored: never the code itself."""

    user_id: str
    purpose: CodePurpose
    digest: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    max_attempts: int = 5
    used: bool = False

    def usable(self, now: datetime) -> bool:
        return not self.used and self.expires_at > now and self.attempts < self.max_attempts

    def may_resend(self, now: datetime, rules: CodeRules) -> bool:
        return now - self.created_at >= rules.resend_interval

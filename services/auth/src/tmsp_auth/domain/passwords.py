"""Password policy and argon2id hashing.

The policy follows OWASP ASVS 5.0 V6.2: 12 to 128 characters, any characters, no
composition rules, rejected when on a list of common passwords (shipped as package data).
Hashing uses argon2id; parameters are injectable so unit tests run fast, and a hash made
with other parameters is reported as needing a rehash (done on the next successful login).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tmsp_common.errors import InvalidArgument

MIN_LENGTH = 12
MAX_LENGTH = 128

OWASP_MEMORY_KIB = 19456
"""OWASP's minimum argon2id configuration: 19 MiB, t=2, p=1."""


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    text = resources.files("tmsp_auth.data").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def normalize_password(password: str) -> str:
    """NFKC, as ASVS recommends, so the same password typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: str, *, field: str = "new_password", email: str = "") -> None:
    """Raise :class:`InvalidArgument` naming ``field`` when ``password`` is not acceptable."""
    pw = normalize_password(password)
    if len(pw) < MIN_LENGTH:
        raise InvalidArgument(field, f"must be at least {MIN_LENGTH} characters")
    if len(pw) > MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_LENGTH} characters")
    lowered = pw.lower()
    common = common_passwords()
    # A common password with digits or symbols appended ("password123456") is still common.
    stem = lowered.rstrip("0123456789!@#$%^&*()-_=+.,;:?~ ")
    if lowered in common or stem in common or not stem:
        raise InvalidArgument(field, "is a commonly used password")
    if email and lowered == email.strip().lower():
        raise InvalidArgument(field, "must not be the email address")
    if len(set(lowered)) < 3:
        raise InvalidArgument(field, "is too repetitive")


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost parameters."""

    memory_kib: int = OWASP_MEMORY_KIB
    time_cost: int = 2
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16


class Hasher:
    """argon2id hashing with fixed parameters and a dummy hash for unknown users."""

    def __init__(self, params: Argon2Params | None = None) -> None:
        self.params = params or Argon2Params()
        self._ph = PasswordHasher(
            time_cost=self.params.time_cost,
            memory_cost=self.params.memory_kib,
            parallelism=self.params.parallelism,
            hash_len=self.params.hash_len,
            salt_len=self.params.salt_len,
            type=Type.ID,
        )
        self._dummy = self._ph.hash("tmsp-dummy-password-for-unknown-users")

    def hash(self, password: str) -> str:
        return self._ph.hash(normalize_password(password))

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches; never raises for a bad password or hash."""
        try:
            return self._ph.verify(stored_hash, normalize_password(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def burn(self, password: str) -> None:
        """Spend one hash on a dummy, so an unknown user costs what a known one does."""
        self.verify(self._dummy, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._ph.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

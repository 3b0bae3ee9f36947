"""What every use case needs: repositories, hashers, keys, the event publisher, the clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from tmsp_auth.adapters.events import EventPublisher
from tmsp_auth.adapters.metrics import PASSWORD_HASH_SECONDS
from tmsp_auth.adapters.repositories import (
    AccountRepository,
    ChallengeRepository,
    CodeRepository,
    SessionRepository,
    TokenRepository,
    UserRepository,
)
from tmsp_auth.adapters.signing_keys import SigningKeys
from tmsp_auth.domain.codes import CodeHasher, CodeRules
from tmsp_auth.domain.crypto import Keyring, Sealed
from tmsp_auth.domain.lockout import LockoutPolicy
from tmsp_auth.domain.passwords import Hasher
from tmsp_common.clock import Clock
from tmsp_common.email import MAX_ADDRESS, address_key, bare_address
from tmsp_common.errors import InvalidArgument
from tmsp_common.mongo import Document


@dataclass(frozen=True)
class AuthConfig:
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    code_rules: CodeRules = field(default_factory=CodeRules)
    refresh_ttl: timedelta = timedelta(days=14)
    challenge_ttl: timedelta = timedelta(minutes=5)
    reset_ttl: timedelta = timedelta(minutes=30)
    invite_ttl: timedelta = timedelta(hours=72)
    pending_totp_ttl: timedelta = timedelta(minutes=30)
    emergency_codes_enabled: bool = True
    totp_issuer: str = "TMSP"
    reset_url_base: str = "https://portal.tmsp.local/reset-password?token="
    recovery_code_count: int = 10


@dataclass
class AuthContext:
    users: UserRepository
    accounts: AccountRepository
    codes: CodeRepository
    tokens: TokenRepository
    challenges: ChallengeRepository
    sessions: SessionRepository
    keys: SigningKeys
    events: EventPublisher
    hasher: Hasher
    code_hasher: CodeHasher
    keyring: Keyring
    clock: Clock
    config: AuthConfig

    async def hash_password(self, password: str) -> str:
        """argon2id off the event loop (argon2-cffi releases the GIL)."""
        with PASSWORD_HASH_SECONDS.time():
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify_password(self, stored: str, password: str) -> bool:
        with PASSWORD_HASH_SECONDS.time():
            return await asyncio.to_thread(self.hasher.verify, stored, password)

    async def burn_hash(self, password: str) -> None:
        with PASSWORD_HASH_SECONDS.time():
            await asyncio.to_thread(self.hasher.burn, password)

    def seal_totp(self, user_id: str, secret: str) -> Document:
        sealed = self.keyring.seal(secret.encode(), f"totp:{user_id}")
        return {"kid": sealed.kid, "nonce": sealed.nonce, "ciphertext": sealed.ciphertext}

    def open_totp(self, user_id: str, doc: Document) -> str:
        sealed = Sealed(str(doc["kid"]), bytes(doc["nonce"]), bytes(doc["ciphertext"]))
        return self.keyring.open(sealed, f"totp:{user_id}").decode()


def normalize_email(email: str, *, field: str = "email", strict: bool = False) -> str:
    """The address as stored for lookups (:func:`tmsp_common.email.address_key`).

    With ``strict`` (new users) a malformed address is an InvalidArgument; without it
    (login, reset) it is only lower-cased, so it simply matches nobody. Both use the same
    normalisation, so an address typed in another Unicode form or as punycode still matches.
    """
    value = email.strip()
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ADDRESS:
        raise InvalidArgument(field, "is too long")
    return bare_address(value, field).lower() if strict else address_key(value)

"""Product authentication for the log and status servers, with a short verification cache.

argon2id costs tens of milliseconds; an appliance uploading every minute (or a syslog
stream reconnecting) should not pay it every time. A successful verification is cached for
``ttl`` seconds as a keyed BLAKE2b digest of the password (the key is random per process,
so the cache holds nothing an attacker could reuse offline) together with the product's
credentials version; later attempts compare digests in constant time. Rotating credentials
bumps the version and so invalidates the cache entry immediately.

A session stays open for minutes or days (a syslog stream, an SFTP session uploading file after
file), so its right to go on is confirmed again while it runs (:class:`SessionStanding`):
rotation, disabling, deregistration and account deletion or expiry end open sessions too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from tmsp_common.clock import Clock
from tmsp_common.logging import get_logger
from tmsp_ingest.domain.products import (
    AccountView,
    PasswordHasher,
    Product,
    Refusal,
)
from tmsp_ingest.domain.throttle import FailureThrottle
from tmsp_ingest.service_layer.ports import AccountRepository, ProductRepository

log = get_logger(__name__)


class AuthenticationFailed(Exception):
    """``reason`` is one of :class:`Refusal`; ``retry_after`` set when throttled."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Authenticated:
    product: Product
    account: AccountView


@dataclass
class _Cached:
    digest: bytes
    credentials_version: int
    expires: float


class ProductAuthenticator:
    def __init__(
        self,
        products: ProductRepository,
        accounts: AccountRepository,
        hasher: PasswordHasher,
        clock: Clock,
        throttle: FailureThrottle | None = None,
        ttl: float = 60.0,
        dummy_hash: str = "",
    ) -> None:
        self.products = products
        self.accounts = accounts
        self.hasher = hasher
        self.clock = clock
        self.throttle = throttle or FailureThrottle()
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, _Cached] = {}
        self.failures = 0
        self._dummy_hash = dummy_hash

    def _t(self) -> float:
        return self.clock.now().timestamp()

    def _digest(self, password: str) -> bytes:
        return hashlib.blake2b(password.encode(), key=self._key, digest_size=32).digest()

    def _check_throttle(self, source: str) -> None:
        wait = self.throttle.blocked_for(source, self._t())
        if wait > 0:
            raise AuthenticationFailed(Refusal.TOO_MANY_FAILURES, wait)

    def _fail(self, source: str, reason: str) -> AuthenticationFailed:
        self.failures += 1
        self.throttle.failed(source, self._t())
        return AuthenticationFailed(reason)

    async def _standing(self, product: Product) -> Authenticated:
        """Bad standing (disabled product, expired account) refuses even good credentials."""
        reason = product.refusal()
        if reason:
            raise AuthenticationFailed(reason)
        account = await self.accounts.get(product.account_id)
        if account is None:
            raise AuthenticationFailed(Refusal.ACCOUNT_UNKNOWN)
        reason = account.refusal(self.clock.now())
        if reason:
            raise AuthenticationFailed(reason)
        return Authenticated(product, account)

    async def with_password(self, user_name: str, password: str, source: str) -> Authenticated:
        self._check_throttle(source)
        product = await self.products.by_user_name(user_name)
        if product is None:
            if self._dummy_hash:  # same cost as a wrong password: no user-name oracle
                self.hasher.verify(self._dummy_hash, password)
            raise self._fail(source, Refusal.BAD_CREDENTIALS)
        digest = self._digest(password)
        cached = self._cache.get(user_name)
        now = self._t()
        ok = (
            cached is not None
            and cached.expires > now
            and cached.credentials_version == product.credentials_version
            and hmac.compare_digest(cached.digest, digest)
        )
        if not ok:
            if not self.hasher.verify(product.password_hash, password):
                raise self._fail(source, Refusal.BAD_CREDENTIALS)
            self._cache[user_name] = _Cached(digest, product.credentials_version, now + self.ttl)
        self.succeeded(source)
        return await self._standing(product)

    def key_not_proven(self, source: str) -> None:
        """A connection from ``source`` offered a registered key and ended without proving
        it (SSH: no valid signature): a failed authentication, counted like a wrong
        password."""
        self._fail(source, Refusal.BAD_CREDENTIALS)

    def succeeded(self, source: str) -> None:
        """Authentication really completed (a password verified, an SSH signature checked):
        clear the failures counted for ``source``."""
        self.throttle.succeeded(source)

    async def with_public_key(self, user_name: str, key_blob: str, source: str) -> Authenticated:
        """``key_blob`` is the OpenSSH ``type base64`` form of the offered key."""
        self._check_throttle(source)
        product = await self.products.by_user_name(user_name)
        offered = " ".join(key_blob.split()[:2]).encode()
        if product is None or not any(
            hmac.compare_digest(" ".join(k.split()[:2]).encode(), offered)
            for k in product.ssh_public_keys
        ):
            raise self._fail(source, Refusal.BAD_CREDENTIALS)
        # Not succeeded() here: SSH asks this for the unsigned "would you accept this key?"
        # probe too, before any signature is verified (the SSH server calls succeeded()).
        return await self._standing(product)

    async def with_certificate(
        self, product_id: str, cert_sha256: str, source: str
    ) -> Authenticated:
        """A client certificate the CA signed: its fingerprint must be the product's current
        one (rotation revokes the old certificate)."""
        self._check_throttle(source)
        product = await self.products.get(product_id)
        if product is None or not hmac.compare_digest(
            product.client_cert_sha256.encode(), cert_sha256.encode()
        ):
            raise self._fail(source, Refusal.BAD_CREDENTIALS)
        return await self._standing(product)

    async def recheck(self, who: Authenticated) -> Authenticated:
        """``who`` as the registry has it now: the same product, still registered, with the
        credentials it authenticated with (any rotation bumps ``credentials_version`` and
        replaces the certificate) and in good standing. Raises :class:`AuthenticationFailed`;
        not counted as a failed authentication (nobody tried credentials)."""
        product = await self.products.get(who.product.product_id)
        if (
            product is None
            or product.credentials_version != who.product.credentials_version
            or not hmac.compare_digest(
                product.client_cert_sha256.encode(), who.product.client_cert_sha256.encode()
            )
        ):
            raise AuthenticationFailed(Refusal.BAD_CREDENTIALS)
        return await self._standing(product)

    async def user_exists(self, user_name: str) -> bool:
        return await self.products.by_user_name(user_name) is not None


class SessionStanding:
    """An open session's right to go on, confirmed before each batch or file is accepted.

    :meth:`confirm` asks the registry at most every ``every`` seconds (0: every time), so a
    session whose product lost its standing publishes for at most ``every`` seconds after
    the change, plus the batch already being published.
    """

    def __init__(
        self, auth: ProductAuthenticator, who: Authenticated, protocol: str, every: float = 0.0
    ) -> None:
        self.auth = auth
        self.who = who
        self.protocol = protocol
        self.every = every
        self._confirmed_at = auth.clock.now().timestamp()  # the login just checked it

    async def confirm(self) -> Authenticated:
        """The session's current standing (the product as stored now); raises
        :class:`AuthenticationFailed` once it has lost it, and the caller ends the session."""
        now = self.auth.clock.now().timestamp()
        if self.every > 0 and now - self._confirmed_at < self.every:
            return self.who
        try:
            self.who = await self.auth.recheck(self.who)
        except AuthenticationFailed as exc:
            log.warning(
                "session closed: the product may no longer connect",
                protocol=self.protocol,
                product_id=self.who.product.product_id,
                reason=exc.reason,
            )
            raise
        self._confirmed_at = now
        return self.who

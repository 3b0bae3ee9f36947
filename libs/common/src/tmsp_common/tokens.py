"""Access tokens: short-lived JWTs signed with Ed25519 (EdDSA).

Auth signs them (:class:`TokenSigner`); every service verifies them locally
(:class:`JwtVerifier`) with public keys it gets from a *key source*: a static mapping (a
deployment that pins keys, or tests) or auth's ``GetSigningKeys`` RPC. An unknown ``kid``
triggers one refresh of the key set (rate limited), which is how key rotation reaches
verifiers without a restart.

Claims: ``iss``, ``sub`` (user id), ``acct`` (account id), ``roles``, ``amr`` (factors
used, e.g. ``["pwd", "otp"]``), ``sid`` (session id), ``iat``, ``exp``, ``jti``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tmsp_common.authn import Principal, Role
from tmsp_common.clock import Clock, SystemClock
from tmsp_common.errors import Unauthenticated

ISSUER = "tmsp-auth"
ALGORITHM = "EdDSA"

KeySource = Callable[[], Awaitable[Mapping[str, bytes]]]
"""Returns ``{kid: public key PEM}``."""


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class TokenSigner:
    """Issues access tokens with one private key, identified by ``kid``."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        kid: str,
        *,
        ttl: timedelta = timedelta(minutes=10),
        clock: Clock | None = None,
        issuer: str = ISSUER,
    ) -> None:
        self._key = private_key
        self.kid = kid
        self.ttl = ttl
        self._clock = clock or SystemClock()
        self.issuer = issuer

    def issue(self, principal: Principal) -> str:
        now = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.user_id,
            "acct": principal.account_id,
            "roles": sorted(r.value for r in principal.roles),
            "amr": list(principal.factors),
            "sid": principal.session_id,
            "iat": now,
            "exp": now + int(self.ttl.total_seconds()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})


def static_keys(keys: Mapping[str, bytes]) -> KeySource:
    """A key source that always answers ``keys``."""

    async def _source() -> Mapping[str, bytes]:
        return keys

    return _source


class JwtVerifier:
    """Verifies access tokens locally; implements ``tmsp_common.authn.TokenVerifier``."""

    def __init__(
        self,
        key_source: KeySource,
        *,
        clock: Clock | None = None,
        issuer: str = ISSUER,
        leeway_s: int = 5,
        min_refresh_interval_s: float = 10.0,
    ) -> None:
        self._source = key_source
        self._clock = clock or SystemClock()
        self._issuer = issuer
        self._leeway = leeway_s
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_refresh = float("-inf")
        self._min_refresh = min_refresh_interval_s

    async def refresh(self) -> None:
        raw = await self._source()
        keys: dict[str, Ed25519PublicKey] = {}
        for kid, pem in raw.items():
            key = serialization.load_pem_public_key(pem)
            if isinstance(key, Ed25519PublicKey):
                keys[kid] = key
        self._keys = keys
        self._last_refresh = time.monotonic()

    async def _key_for(self, kid: str) -> Ed25519PublicKey:
        if kid not in self._keys and time.monotonic() - self._last_refresh >= self._min_refresh:
            await self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("invalid token")
        return key

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`Unauthenticated` for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token") from exc
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise Unauthenticated("invalid token")
        key = await self._key_for(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                leeway=self._leeway,
                options={"verify_exp": False, "require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token") from exc
        if int(claims["exp"]) + self._leeway < self._clock.now().timestamp():
            raise Unauthenticated("token expired")
        try:
            roles = frozenset(Role(r) for r in claims.get("roles", []))
        except ValueError as exc:
            raise Unauthenticated("invalid token") from exc
        return Principal(
            user_id=str(claims["sub"]),
            account_id=str(claims.get("acct", "")),
            roles=roles,
            session_id=str(claims.get("sid", "")),
            factors=tuple(str(f) for f in claims.get("amr", [])),
        )

"""Ed25519 signing keys, persisted in MongoDB (private key sealed with AES-GCM).

The newest key signs; every key younger than two rotation periods is published by
GetSigningKeys, so tokens signed before a rotation still verify. Replicas that rotate at the
same moment both add a key: harmless, both are published.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tmsp_auth.adapters.repositories import SigningKeyRepository, aware
from tmsp_auth.domain.crypto import Keyring, Sealed
from tmsp_common.clock import Clock
from tmsp_common.mongo import Document
from tmsp_common.tokens import TokenSigner, public_pem


@dataclass(frozen=True)
class PublicKey:
    kid: str
    pem: bytes
    created_at: datetime
    active: bool


class SigningKeys:
    def __init__(
        self,
        repo: SigningKeyRepository,
        keyring: Keyring,
        clock: Clock,
        *,
        rotation: timedelta,
        access_ttl: timedelta,
    ) -> None:
        self._repo = repo
        self._keyring = keyring
        self._clock = clock
        self._rotation = rotation
        self._ttl = access_ttl
        self._signer: TokenSigner | None = None
        self._signer_created: datetime | None = None
        self._public: list[PublicKey] = []
        self._public_loaded = 0.0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Load the keys; create one if there is none or the newest is due for rotation."""
        async with self._lock:
            now = self._clock.now()
            docs = await self._repo.recent(now - 2 * self._rotation)
            if not docs or now - aware(docs[0]["created_at"]) >= self._rotation:
                await self._create(now)
                docs = await self._repo.recent(now - 2 * self._rotation)
            newest = docs[0]
            sealed = Sealed(newest["enc_kid"], newest["nonce"], newest["ciphertext"])
            pem = self._keyring.open(sealed, f"signing-key:{newest['_id']}")
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, Ed25519PrivateKey)  # noqa: S101 - we only store Ed25519
            self._signer = TokenSigner(key, str(newest["_id"]), ttl=self._ttl, clock=self._clock)
            self._signer_created = aware(newest["created_at"])
            self._set_public(docs)

    def _set_public(self, docs: list[Document]) -> None:
        self._public = [
            PublicKey(
                kid=str(d["_id"]),
                pem=bytes(d["public_pem"]),
                created_at=aware(d["created_at"]),
                active=i == 0,
            )
            for i, d in enumerate(docs)
        ]
        self._public_loaded = time.monotonic()

    async def _create(self, now: datetime) -> None:
        key = Ed25519PrivateKey.generate()
        kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        sealed = self._keyring.seal(pem, f"signing-key:{kid}")
        await self._repo.insert(
            {
                "_id": kid,
                "created_at": now,
                "public_pem": public_pem(key),
                "enc_kid": sealed.kid,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
            }
        )

    async def signer(self) -> TokenSigner:
        """The active signer, rotating first when the key is older than the period."""
        created = self._signer_created
        if self._signer is None or created is None or self._clock.now() - created >= self._rotation:
            await self.load()
        assert self._signer is not None  # noqa: S101 - load() sets it
        return self._signer

    async def public_keys(self, max_age_s: float = 10.0) -> list[PublicKey]:
        """Published keys, re-read from the database when older than ``max_age_s`` (another
        replica may have rotated)."""
        if not self._public:
            await self.load()
        elif time.monotonic() - self._public_loaded > max_age_s:
            self._set_public(await self._repo.recent(self._clock.now() - 2 * self._rotation))
        return list(self._public)

    async def key_map(self) -> dict[str, bytes]:
        """For the verifier: asked on an unknown kid (rate limited there), so always fresh."""
        return {k.kid: k.pem for k in await self.public_keys(max_age_s=0.0)}

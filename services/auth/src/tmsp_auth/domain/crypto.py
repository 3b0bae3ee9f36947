"""AES-256-GCM encryption of secrets at rest (TOTP secrets, signing keys).

Keys come from a secret setting as ``kid:base64key`` pairs; the first is used to encrypt,
all decrypt. Each ciphertext records the key id, so keys can be rotated: add a new key in
front, and old records still decrypt. The record id is bound as associated data, so a
ciphertext copied to another user does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyringError(ValueError):
    """The key setting is malformed, or a ciphertext names an unknown key or was tampered."""


@dataclass(frozen=True)
class Sealed:
    kid: str
    nonce: bytes
    ciphertext: bytes


class Keyring:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("at least one encryption key is needed")
        for kid, key in keys:
            if len(key) != 32:
                raise KeyringError(f"key {kid!r} must be 32 bytes (AES-256)")
        self._keys = dict(keys)
        self.active_kid = keys[0][0]
        self._oldest_kid = keys[-1][0]

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """``kid1:base64key1,kid0:base64key0`` (first encrypts)."""
        keys: list[tuple[str, bytes]] = []
        for part in spec.split(","):
            kid, sep, b64 = part.strip().partition(":")
            if not sep or not kid:
                raise KeyringError("expected kid:base64key[,kid:base64key...]")
            try:
                keys.append((kid, base64.b64decode(b64, validate=True)))
            except ValueError as exc:
                raise KeyringError(f"key {kid!r} is not base64") from exc
        return cls(keys)

    @staticmethod
    def generate_spec(kid: str = "k1") -> str:
        return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"

    def seal(self, plaintext: bytes, associated: str) -> Sealed:
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[self.active_kid]).encrypt(nonce, plaintext, associated.encode())
        return Sealed(self.active_kid, nonce, ct)

    def open(self, sealed: Sealed, associated: str) -> bytes:
        key = self._keys.get(sealed.kid)
        if key is None:
            raise KeyringError(f"unknown encryption key id {sealed.kid!r}")
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, associated.encode())
        except InvalidTag as exc:
            raise KeyringError("ciphertext does not authenticate") from exc

    def derive(self, purpose: str) -> bytes:
        """A sub-key for ``purpose`` (e.g. the code-hashing pepper).

        Derived from the *oldest* key, which stays put when a new key is added in front, so
        long-lived digests (recovery codes) survive a rotation.
        """
        return hmac.new(self._keys[self._oldest_kid], purpose.encode(), hashlib.sha256).digest()

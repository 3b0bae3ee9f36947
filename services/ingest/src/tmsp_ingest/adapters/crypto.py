"""argon2id password hashing and client-certificate issuing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tmsp_common.tls import ensure_ca, issue_certificate


class Argon2Hasher:
    """argon2id; the defaults are argon2-cffi's (RFC 9106 low-memory profile)."""

    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4):
        self._hasher = Argon2(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )

    def hash(self, password: str) -> str:
        encoded: str = self._hasher.hash(password)
        return encoded

    def verify(self, encoded: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(encoded, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def certificate_sha256(pem_or_der: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, hex."""
    if pem_or_der.lstrip().startswith(b"-----"):
        der = x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)
    else:
        der = pem_or_der
    return hashlib.sha256(der).hexdigest()


class LocalCaIssuer:
    """Client certificates from the deployment's CA; the CN is the product id."""

    def __init__(self, tls_dir: str) -> None:
        self.tls_dir = tls_dir
        ca_path, _ = ensure_ca(tls_dir)
        self._ca_pem = Path(ca_path).read_bytes()

    def issue(self, product_id: str) -> tuple[bytes, bytes, bytes, str]:
        cert, key = issue_certificate(self.tls_dir, product_id, client=True)
        return cert, key, self._ca_pem, certificate_sha256(cert)

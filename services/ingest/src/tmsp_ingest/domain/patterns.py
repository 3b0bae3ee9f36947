"""Custom cleanup patterns: the gateway's copy of each account's catalogue, and who may
download a pattern from the log server.

The catalogue arrives on a compacted topic, possibly replayed or out of order; the highest
version of each pattern wins, and a removal is kept as a tombstone with its version so an
older put replayed later cannot bring the pattern back. Only the Threat Mitigators of the
pattern's account may download it; to anyone else an existing pattern of another account
looks exactly like a missing one. Pure: no storage, no bus.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from tmsp_common.errors import InvalidArgument, NotFound, PermissionDenied
from tmsp_ingest.domain.products import Kind, Product

MAX_PATTERN_BYTES = 512 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it can name a pattern (1-64 of ``[A-Za-z0-9._-]``, starting with a letter
    or digit); InvalidArgument naming ``name`` otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            "name", "1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return name


def pattern_key(account_id: str, name: str) -> str:
    """The pattern's key on the topic and in the store."""
    return f"{account_id}/{name}"


@dataclass(frozen=True)
class CleanupPattern:
    """One pattern of an account's catalogue as it is now, or its tombstone."""

    account_id: str
    name: str
    content: bytes
    content_sha256: str
    size: int
    version: int
    deleted: bool
    updated_at: datetime | None = None
    description: str = ""

    @property
    def key(self) -> str:
        return pattern_key(self.account_id, self.name)

    def problem(self) -> str | None:
        """Why this pattern cannot be stored (it is dead-lettered), or None."""
        if not self.account_id:
            return "cleanup pattern without account_id"
        if not _NAME.fullmatch(self.name):
            return "cleanup pattern with an invalid name"
        if self.version <= 0:
            return "cleanup pattern without a version"
        if self.deleted:
            return None
        if self.size != len(self.content):
            return "cleanup pattern whose size is not its content's"
        if self.size > MAX_PATTERN_BYTES:
            return f"cleanup pattern larger than {MAX_PATTERN_BYTES} bytes"
        if hashlib.sha256(self.content).hexdigest() != self.content_sha256.lower():
            return "cleanup pattern whose content does not match its content_sha256"
        return None


def supersedes(incoming_version: int, stored_version: int | None) -> bool:
    """Whether a pattern at ``incoming_version`` replaces the stored one (the same version
    again is a replay of the same change and may be written again)."""
    return stored_version is None or incoming_version >= stored_version


def check_tmi(product: Product) -> None:
    """PermissionDenied unless ``product`` is a Threat Mitigator (cleanup patterns are
    theirs alone; a TDA is told so, whatever the pattern)."""
    if product.kind is not Kind.THREAT_MITIGATOR:
        raise PermissionDenied("cleanup patterns are for Threat Mitigators")


def downloadable(product: Product, name: str, stored: CleanupPattern | None) -> CleanupPattern:
    """The pattern ``product`` asked for by ``name`` (``stored``: what the store holds under
    the product's account). PermissionDenied for a product that is not a Threat Mitigator;
    NotFound for an unknown or removed pattern and for one of another account (never
    revealing that it exists)."""
    check_tmi(product)
    if stored is None or stored.deleted or stored.account_id != product.account_id:
        raise NotFound(f"cleanup pattern {name!r} not found")
    return stored

"""The custom cleanup pattern catalogue: what a pattern may be, and how a put or a removal
changes an entry's version (it grows by one with every change, the removal too)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from tmsp_common.errors import FailedPrecondition, InvalidArgument

MAX_PATTERNS = 100
"""Entries (not removed) per account."""
MAX_PATTERN_BYTES = 512 * 1024
"""The content travels inline on the cleanup-patterns topic (Kafka's 1 MB record limit)."""
MAX_DESCRIPTION = 500
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def pattern_name(raw: str) -> str:
    """A catalogue name: 1-64 of [A-Za-z0-9._-], starting with a letter or digit (it is a
    path segment of the log server's ``GET /v1/cleanup-patterns/<name>``)."""
    if not _NAME.fullmatch(raw):
        raise InvalidArgument(
            "name", "1-64 of letters, digits, '.', '_', '-', starting with a letter or digit"
        )
    return raw


def pattern_description(raw: str) -> str:
    """Stripped free text of at most 500 characters without control characters."""
    text = raw.strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument("description", f"at most {MAX_DESCRIPTION} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidArgument("description", "no control characters")
    return text


def pattern_content(raw: bytes) -> bytes:
    if not raw:
        raise InvalidArgument("content", "the pattern file is empty")
    if len(raw) > MAX_PATTERN_BYTES:
        raise InvalidArgument("content", f"at most {MAX_PATTERN_BYTES} bytes")
    return raw


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class CleanupPatternEntry:
    """One catalogue entry as stored (its content is stored beside it)."""

    account_id: str
    name: str
    description: str
    content_sha256: str
    size: int
    version: int
    updated_at: datetime
    updated_by_user_id: str
    deleted: bool = False
    published: bool = False
    """The cleanup-patterns topic acknowledged this version (the log server can serve it)."""

    @property
    def key(self) -> str:
        """The topic key and the stored id."""
        return f"{self.account_id}/{self.name}"


def next_version(
    stored: CleanupPatternEntry | None,
    description: str,
    content_sha256: str,
    expected_version: int | None,
) -> int | None:
    """The version a put stores, or None when the stored entry already is what is put (a
    retry, for instance after the bus was unavailable: publish the stored one again).

    ``expected_version`` (None: any) must be the stored entry's version, 0 when there is
    none or it was removed; FailedPrecondition otherwise.
    """
    live = stored is not None and not stored.deleted
    if (
        stored is not None
        and live
        and stored.description == description
        and stored.content_sha256 == content_sha256
    ):
        return None
    current = stored.version if stored is not None and live else 0
    if expected_version is not None and expected_version != current:
        state = f"is at version {current}" if current else "does not exist"
        raise FailedPrecondition(
            f"the cleanup pattern {state}, not {expected_version}; read it again"
        )
    return (stored.version if stored is not None else 0) + 1

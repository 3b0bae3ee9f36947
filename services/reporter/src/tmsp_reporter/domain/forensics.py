"""Forensic data files arriving in chunks: which chunks can be stored, and when a file is
complete (every chunk there and the content's SHA-256 and size what the product said)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime

from tmsp_common.forensics import CHUNK_BYTES, ForensicFile

MAX_CHUNK_BYTES = CHUNK_BYTES
MAX_FILE_BYTES = 1024 * 1024 * 1024
MAX_CHUNKS = MAX_FILE_BYTES // MAX_CHUNK_BYTES
MAX_FILE_NAME = 255
_SHA256 = re.compile(r"[0-9a-f]{64}")


class InvalidChunk(Exception):
    """A chunk that can never be stored (it is dead-lettered with ``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ForensicFileRow:
    """One file as the portal lists it."""

    file: ForensicFile
    received_at: datetime
    complete: bool


def check_chunk(file: ForensicFile, index: int, data_length: int) -> None:
    """Raise InvalidChunk unless a chunk with this metadata could belong to a whole file."""
    missing = [
        name
        for name in ("upload_id", "task_id", "account_id", "product_id", "file_name")
        if not getattr(file, name)
    ]
    if missing:
        raise InvalidChunk(f"invalid: {', '.join(missing)} missing")
    if len(file.file_name) > MAX_FILE_NAME or any(
        unicodedata.category(c) == "Cc" for c in file.file_name
    ):
        raise InvalidChunk(f"invalid: file_name (at most {MAX_FILE_NAME} printable characters)")
    if not _SHA256.fullmatch(file.content_sha256):
        raise InvalidChunk("invalid: content_sha256 is not a hex SHA-256")
    if not 1 <= file.count <= MAX_CHUNKS:
        raise InvalidChunk(f"invalid: count {file.count} (1 to {MAX_CHUNKS})")
    if file.size > MAX_FILE_BYTES or file.size > file.count * MAX_CHUNK_BYTES:
        raise InvalidChunk(
            f"invalid: size {file.size} (at most {MAX_FILE_BYTES}, and {MAX_CHUNK_BYTES} per chunk)"
        )
    if index >= file.count:
        raise InvalidChunk(f"invalid: index {index} of {file.count} chunks")
    if data_length > MAX_CHUNK_BYTES:
        raise InvalidChunk(f"invalid: chunk of {data_length} bytes (at most {MAX_CHUNK_BYTES})")


def check_agrees(stored: ForensicFile, chunk: ForensicFile) -> None:
    """Raise InvalidChunk when a chunk's metadata differs from the upload's first chunks."""
    differ = [
        f.name for f in fields(ForensicFile) if getattr(stored, f.name) != getattr(chunk, f.name)
    ]
    if differ:
        raise InvalidChunk(f"invalid: {', '.join(differ)} disagree with earlier chunks")


def all_received(received: Collection[int], count: int) -> bool:
    return set(received) == set(range(count))


def verified(file: ForensicFile, content_sha256: str, size: int) -> bool:
    """The reassembled content is the file the product described."""
    return content_sha256 == file.content_sha256 and size == file.size

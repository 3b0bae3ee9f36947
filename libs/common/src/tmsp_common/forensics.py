"""The forensic data contract between its producer (ingest's log server) and its consumer
(the reporter's store): a file travels as ``ForensicDataChunk`` events of at most
:data:`CHUNK_BYTES`, each repeating the file's metadata (:class:`ForensicFile`)."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_BYTES = 256 * 1024
"""The largest chunk: ingest cuts files into these, the reporter refuses larger ones."""


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many chunks a file of ``size`` bytes travels in."""
    return -(-size // chunk_bytes)


@dataclass(frozen=True)
class ForensicFile:
    """One file of forensic data, as every chunk of it describes it."""

    upload_id: str
    task_id: str
    account_id: str
    product_id: str
    file_name: str
    content_sha256: str
    size: int
    count: int
    """Chunks it travels in (``chunk_count(size)`` from a well-behaved producer)."""

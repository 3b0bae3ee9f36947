"""Forensic data a product uploads in answer to a forensic data request task.

The file is taken as is (no decompression, no parsing), cut into chunks of at most
:data:`CHUNK_BYTES` and published as ``ForensicDataChunk`` events. Everything that names the
upload is derived from what the product sent (task, product, file name, content hash), so a
retried upload publishes the same upload id and the same event ids and consumers keep one
copy. Pure: no storage, no bus.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from tmsp.events.v1 import status_pb2
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.forensics import CHUNK_BYTES, ForensicFile, chunk_count
from tmsp_ingest.domain.bandwidth import pieces

FORENSIC_DATA_REQUEST = status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def check_file_name(name: str) -> str:
    """``name`` if it is 1-128 of ``[A-Za-z0-9._-]`` not starting with '.'; else
    InvalidArgument naming ``file_name``."""
    if not _FILE_NAME.fullmatch(name):
        raise InvalidArgument(
            "file_name", "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
        )
    return name


def check_task(task_product_id: str | None, task_kind: int, product_id: str) -> None:
    """The task a forensic upload answers must exist and be this product's (NotFound
    otherwise, the same words for both: another product's task is not revealed), and be a
    forensic data request (FailedPrecondition)."""
    if task_product_id is None or task_product_id != product_id:
        raise NotFound("task not found")
    if task_kind != FORENSIC_DATA_REQUEST:
        raise FailedPrecondition("task is not a forensic data request")


def upload_id(task_id: str, product_id: str, file_name: str, content_sha256: str) -> str:
    """``fd-`` + 32 hex digits naming one file's upload; the same for every retry."""
    material = "\0".join((task_id, product_id, file_name, content_sha256)).encode()
    return "fd-" + hashlib.sha256(material).hexdigest()[:32]


def chunks(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The pieces of ``data`` in order, each at most ``chunk_bytes``, none empty."""
    return pieces(data, chunk_bytes)


def chunk_event_id(upload: str, index: int) -> str:
    return f"{upload}:{index}"


def forensic_file(
    task_id: str, account_id: str, product_id: str, file_name: str, data: bytes
) -> ForensicFile:
    """The metadata of ``data`` uploaded as ``file_name`` for ``task_id``."""
    sha = hashlib.sha256(data).hexdigest()
    return ForensicFile(
        upload_id=upload_id(task_id, product_id, file_name, sha),
        task_id=task_id,
        account_id=account_id,
        product_id=product_id,
        file_name=file_name,
        content_sha256=sha,
        size=len(data),
        count=chunk_count(len(data)),
    )

"""Page sizes and page tokens of the List RPCs.

A page token is opaque to clients: URL-safe base64 of a JSON list of strings, most often
the sort key of the last item of a page (a time and an id, see :func:`time_token`). A token
that was not made here is ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from tmsp_common.errors import InvalidArgument

T = TypeVar("T")


def page_size(requested: int, default: int, maximum: int) -> int:
    """``default`` for 0, else ``requested`` capped at ``maximum``."""
    if requested <= 0:
        return default
    return min(requested, maximum)


def encode_token(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


def decode_token(token: str, n: int) -> list[str] | None:
    """The ``n`` parts of a token (None for no token)."""
    if not token:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        parts = None
    if not isinstance(parts, list) or len(parts) != n or not all(isinstance(p, str) for p in parts):
        raise InvalidArgument("page_token", "not a token from a previous page")
    return parts


def time_token(at: datetime, item_id: str) -> str:
    """The token after an item sorted by (time, id)."""
    return encode_token(at.isoformat(), item_id)


def decode_time_token(token: str) -> tuple[datetime, str] | None:
    """(time, id) of a :func:`time_token` (None for no token)."""
    parts = decode_token(token, 2)
    if parts is None:
        return None
    try:
        at = datetime.fromisoformat(parts[0])
    except ValueError:
        raise InvalidArgument("page_token", "not a token from a previous page") from None
    if at.tzinfo is None:
        raise InvalidArgument("page_token", "not a token from a previous page")
    return at, parts[1]


def next_page_token(rows: Sequence[T], size: int, key: Callable[[T], tuple[datetime, str]]) -> str:
    """The next page's token after a full page: the last row's time and id (``key``);
    empty after a short page (the last one)."""
    if not rows or len(rows) != size:
        return ""
    return time_token(*key(rows[-1]))

"""Validation of everything that ends up in a mail header, and of attachments.

Header injection is the risk: a CR or LF in an address, a subject or a file name would let
a caller add headers (``Bcc:``) or a body. Such values are refused, never "cleaned".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tmsp_common.email import bare_address
from tmsp_common.errors import InvalidArgument
from tmsp_notifier.domain.model import Attachment

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOTIFICATION_ID = re.compile(r"[A-Za-z0-9][\x21-\x7e]{0,199}")
MAX_SUBJECT = 200
MAX_RECIPIENTS = 50
DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


def validate_address(address: str, field: str = "recipients") -> str:
    """The normalised address (:func:`tmsp_common.email.bare_address`: CR, LF, every other
    control character and display names are refused), or InvalidArgument naming ``field``;
    nothing but an address can reach the ``To`` header."""
    return bare_address(address, field)


def validate_recipients(addresses: Iterable[str], field: str = "recipients") -> tuple[str, ...]:
    """Validated, de-duplicated (case-insensitively), order-preserving recipients."""
    seen: dict[str, str] = {}
    for raw in addresses:
        address = validate_address(raw, field)
        seen.setdefault(address.lower(), address)
    if len(seen) > MAX_RECIPIENTS:
        raise InvalidArgument(field, f"at most {MAX_RECIPIENTS} recipients")
    return tuple(seen.values())


def validate_subject(subject: str) -> str:
    """A subject with no control characters and a bounded length."""
    if _CONTROL.search(subject):
        raise InvalidArgument("subject", "control characters (CR/LF) are not allowed")
    subject = subject.strip()
    if not subject:
        raise InvalidArgument("subject", "empty subject")
    if len(subject) > MAX_SUBJECT:
        raise InvalidArgument("subject", f"longer than {MAX_SUBJECT} characters")
    return subject


def validate_notification_id(notification_id: str) -> str:
    """Ids are 1-200 printable ASCII characters without spaces, starting alphanumeric.

    They go into a header (``X-TMSP-Notification-Id``) and the delivery log key, so no
    space or control character; the Message-ID is derived from them (``policy.message_id``).
    """
    if not _NOTIFICATION_ID.fullmatch(notification_id):
        raise InvalidArgument(
            "notification_id",
            "1-200 printable ASCII characters without spaces, starting alphanumeric",
        )
    return notification_id


_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def validate_attachments(
    attachments: Iterable[Attachment], max_total_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
) -> tuple[Attachment, ...]:
    """Attachments with safe file names and content types, within the total size bound."""
    out = tuple(attachments)
    total = 0
    for a in out:
        if not a.filename or _CONTROL.search(a.filename) or any(c in a.filename for c in '/\\"'):
            raise InvalidArgument("attachments.filename", "empty or unsafe file name")
        if len(a.filename) > 200:
            raise InvalidArgument("attachments.filename", "longer than 200 characters")
        if not _CONTENT_TYPE.fullmatch(a.content_type.lower()):
            raise InvalidArgument("attachments.content_type", "not a type/subtype media type")
        total += len(a.content)
    if total > max_total_bytes:
        raise InvalidArgument(
            "attachments", f"{total} bytes attached, at most {max_total_bytes} allowed"
        )
    return out

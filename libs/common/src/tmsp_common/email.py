"""Email addresses as every service takes them: one bare ``local@domain``, normalised.

One rule for the whole portal, so that an address a user signed up with (auth), a report
recipient (reporter), a mail's ``To`` (notifier) and a product's registration email
(ingest) compare equal however they were typed (Unicode form, IDNA or punycode domain,
letter case). Header injection is refused, never cleaned: control characters and the
punctuation of display names and address lists never get past :func:`bare_address`.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from tmsp_common.errors import InvalidArgument

MAX_ADDRESS = 254
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_BARE = frozenset('<>,;"()')


def bare_address(raw: str, field: str = "email") -> str:
    """The normalised address (NFC, IDNA domain; the local part's case kept), or
    InvalidArgument naming ``field``."""
    if _CONTROL.search(raw):
        raise InvalidArgument(field, "control characters (CR/LF) are not allowed in an address")
    if any(c in _NOT_BARE for c in raw):
        raise InvalidArgument(field, "only a bare address local@domain is allowed")
    value = raw.strip()
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ADDRESS:
        raise InvalidArgument(field, "is too long")
    try:
        normalized: str = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidArgument(field, f"invalid email address: {exc}") from None
    return normalized


def address_key(raw: str) -> str:
    """The form addresses are looked up and compared in: :func:`bare_address`, lower-cased.
    Never raises: a malformed address is only trimmed and lower-cased, so it matches no
    well-formed one ("" stays "")."""
    try:
        return bare_address(raw).lower()
    except InvalidArgument:
        return raw.strip().lower()

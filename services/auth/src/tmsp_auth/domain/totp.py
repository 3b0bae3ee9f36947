"""TOTP (RFC 6238) as Google Authenticator honours it: SHA1, 6 digits, 30 s, 160-bit secret.

Verification accepts the current step and one either side, and returns the *step* that
matched: the repository accepts a step only if it is newer than the last one used by that
user (compare-and-set), so each code works at most once, including the enrolment code.
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

import pyotp
import segno

DIGITS = 6
PERIOD_S = 30
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommended length
WINDOW = 1
STALE_STEPS = 10
"""How far back (5 minutes) a code is recognised as expired rather than invalid."""


def new_secret() -> str:
    """A fresh 160-bit secret, base32 without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // PERIOD_S


def code_at_step(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_S).generate_otp(step)


def looks_like_code(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def _step_matching(secret: str, code: str, steps: range) -> int | None:
    """The first of ``steps`` whose code equals ``code``, else None. Every candidate is
    compared in constant time, and all are compared (no early exit)."""
    code = code.strip().replace(" ", "")
    if not looks_like_code(code):
        return None
    found: int | None = None
    for step in steps:
        if hmac.compare_digest(code_at_step(secret, step), code) and found is None:
            found = step
    return found


def matching_step(secret: str, code: str, now: datetime, window: int = WINDOW) -> int | None:
    """The time step within +-``window`` whose code equals ``code``, else None."""
    current = time_step(now)
    return _step_matching(secret, code, range(current - window, current + window + 1))


def is_stale(secret: str, code: str, now: datetime, window: int = WINDOW) -> bool:
    """True when ``code`` belongs to a step just before the accepted window (expired).

    Only told to a caller who passed the password step; compared in constant time.
    """
    current = time_step(now)
    steps = range(current - window - STALE_STEPS, current - window)
    return _step_matching(secret, code, steps) is not None


def provisioning_uri(secret: str, *, issuer: str, account_label: str) -> str:
    """``otpauth://totp/Issuer:label?...`` with every parameter spelled out.

    Google Authenticator honours only SHA1, 6 digits and 30 s; they are written explicitly
    anyway so that other apps cannot fall back to different defaults.
    """
    label = f"{quote(issuer, safe='')}:{quote(account_label, safe='')}"
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": PERIOD_S,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


@dataclass(frozen=True)
class Provisioning:
    """What the authenticator app needs: the URI, and the URI as QR codes."""

    uri: str
    secret: str
    qr_png: bytes
    qr_svg: str


def provisioning(secret: str, *, issuer: str, account_label: str) -> Provisioning:
    """otpauth:// URI (issuer, label, secret, SHA1, 6 digits, 30 s) and PNG/SVG QR codes."""
    uri = provisioning_uri(secret, issuer=issuer, account_label=account_label)
    qr = segno.make(uri, error="m")
    png = io.BytesIO()
    qr.save(png, kind="png", scale=5)
    svg = io.BytesIO()
    qr.save(svg, kind="svg", scale=4, xmldecl=False)
    return Provisioning(
        uri=uri, secret=secret, qr_png=png.getvalue(), qr_svg=svg.getvalue().decode()
    )

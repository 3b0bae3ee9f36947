"""Validation of what callers send: recipient addresses, task parameters, triage decisions,
page sizes."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from tmsp_common.email import bare_address
from tmsp_common.errors import InvalidArgument
from tmsp_reporter.domain.model import IncidentStatus

MAX_RECIPIENTS = 50
MAX_TASK_PARAMETERS = 16
MAX_PARAMETER_VALUE = 4096
MAX_STATUS_NOTE = 2000
TRIAGE_STATUSES = frozenset(set(IncidentStatus) - {IncidentStatus.UNSPECIFIED})
_PARAM_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def normalise_email(raw: str, field: str = "email") -> str:
    """A bare address in its lookup form (the recipients' unique key); InvalidArgument
    naming ``field`` otherwise."""
    return bare_address(raw, field).lower()


def task_parameters(params: Mapping[str, str], *, cleanup: bool) -> dict[str, str]:
    """Bounded, well-formed task parameters; a custom cleanup needs ``pattern_name``."""
    if len(params) > MAX_TASK_PARAMETERS:
        raise InvalidArgument("parameters", f"at most {MAX_TASK_PARAMETERS}")
    for key, value in params.items():
        if not _PARAM_KEY.match(key):
            raise InvalidArgument("parameters", f"key {key[:40]!r}: lower-case [a-z0-9_]")
        if len(value) > MAX_PARAMETER_VALUE or any(ord(c) < 32 and c != "\n" for c in value):
            raise InvalidArgument("parameters", f"{key}: at most 4096 printable characters")
    if cleanup and not params.get("pattern_name", "").strip():
        raise InvalidArgument("parameters", "a custom cleanup pattern needs pattern_name")
    return dict(params)


def triage_status(value: int) -> IncidentStatus:
    """The status a triage decision sets; InvalidArgument("status") for unset or unknown."""
    try:
        status = IncidentStatus(value)
    except ValueError:
        status = IncidentStatus.UNSPECIFIED
    if status not in TRIAGE_STATUSES:
        raise InvalidArgument("status", "new, investigating, resolved or false positive")
    return status


def status_note(raw: str) -> str:
    """A triage note, stripped, with Windows and old Mac line ends as newlines: at most 2000
    characters, no control characters but newlines and tabs (InvalidArgument("note")
    otherwise); empty is allowed."""
    note = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(note) > MAX_STATUS_NOTE:
        raise InvalidArgument("note", f"at most {MAX_STATUS_NOTE} characters")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in note):
        raise InvalidArgument("note", "no control characters but newlines and tabs")
    return note


def csv_cell(value: object) -> str:
    """A CSV cell that spreadsheets will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text

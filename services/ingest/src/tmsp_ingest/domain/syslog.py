"""Syslog: RFC 5424 and the BSD format of RFC 3164.

A syslog message whose MSG is a CEF record is parsed as CEF, with the syslog timestamp and
host as fallbacks (that is how most sensors ship CEF). Any other MSG becomes a detection
whose threat name is the message text. Linear scanners only; no regular expressions.
"""

from __future__ import annotations

from tmsp_common.severity import Severity
from tmsp_ingest.domain.cef import parse_cef
from tmsp_ingest.domain.records import Fields, Format, InvalidRecord, apply_known
from tmsp_ingest.domain.timeparse import iso8601, month_day

# syslog severity (PRI & 7) -> level
SYSLOG_LEVELS: tuple[Severity, ...] = (
    Severity.CRITICAL,  # emerg
    Severity.CRITICAL,  # alert
    Severity.CRITICAL,  # crit
    Severity.HIGH,  # err
    Severity.MEDIUM,  # warning
    Severity.LOW,  # notice
    Severity.INFORMATIONAL,  # info
    Severity.INFORMATIONAL,  # debug
)
MAX_THREAT_NAME = 512


def _pri(line: str) -> tuple[int, int]:
    """(PRI value, index after ``>``)."""
    end = line.find(">", 1, 6)
    if not line.startswith("<") or end == -1:
        raise InvalidRecord("syslog without <PRI>")
    digits = line[1:end]
    if not digits.isdigit() or int(digits) > 191:
        raise InvalidRecord(f"bad syslog PRI {digits[:5]!r}")
    return int(digits), end + 1


def parse_structured_data(text: str) -> tuple[dict[str, str], str]:
    """``[id k="v" ...][id2 ...]`` or ``-``: the params (``id.k`` and bare ``k``) and the
    rest of the line after the structured data."""
    if text.startswith("-"):
        return {}, text[1:].lstrip(" ")
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n and text[i] == "[":
        close_id = i + 1
        while close_id < n and text[close_id] not in " ]":
            close_id += 1
        sd_id = text[i + 1 : close_id]
        if not sd_id:
            raise InvalidRecord("empty SD-ID")
        i = close_id
        while i < n and text[i] == " ":
            i += 1
            eq = text.find("=", i)
            if eq == -1 or eq + 1 >= n or text[eq + 1] != '"':
                raise InvalidRecord("bad structured data parameter")
            name = text[i:eq]
            if not name or " " in name:
                raise InvalidRecord("bad structured data parameter name")
            j = eq + 2
            buf: list[str] = []
            while True:
                if j >= n:
                    raise InvalidRecord("unterminated structured data value")
                ch = text[j]
                if ch == "\\" and j + 1 < n and text[j + 1] in '"\\]':
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if ch == '"':
                    break
                buf.append(ch)
                j += 1
            value = "".join(buf)
            params[name] = value
            params[f"{sd_id}.{name}"] = value
            i = j + 1
        if i >= n or text[i] != "]":
            raise InvalidRecord("unterminated structured data element")
        i += 1
    if i == 0:
        raise InvalidRecord("bad structured data")
    return params, text[i:].lstrip(" ")


def _message_fields(
    fmt: Format, msg: str, host: str, when: float | None, *, default_year: int, now: float | None
) -> Fields:
    cef_at = msg.find("CEF:")
    if cef_at != -1 and cef_at < 64:
        fields = parse_cef(msg[cef_at:], default_year=default_year, now=now)
        if fields.occurred_at is None:
            fields.occurred_at = when
        if not fields.ep_host:
            fields.ep_host = host
        fields.extra["syslog_format"] = fmt.label
        return fields
    fields = Fields(fmt)
    fields.occurred_at = when
    fields.ep_host = host
    fields.threat_name = msg[:MAX_THREAT_NAME]
    return fields


def parse_rfc5424(line: str, *, default_year: int, now: float | None = None) -> Fields:
    pri, at = _pri(line)
    parts = line[at:].split(" ", 6)
    if len(parts) < 7 or parts[0] != "1":
        raise InvalidRecord("RFC 5424 header incomplete")
    version, stamp, host, app, procid, msgid, rest = parts
    del version
    when = None if stamp == "-" else iso8601(stamp)
    params, msg = parse_structured_data(rest)
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    host = "" if host == "-" else host
    fields = _message_fields(
        Format.SYSLOG_RFC5424, msg, host, when, default_year=default_year, now=now
    )
    if fields.format is Format.SYSLOG_RFC5424:
        fields.level = SYSLOG_LEVELS[pri & 7]
        fields.vendor_severity = str(pri & 7)
        if msgid != "-":
            fields.signature_id = msgid
    extra = fields.extra
    if app != "-":
        extra["app_name"] = app
    if procid != "-":
        extra["proc_id"] = procid
    for key, value in params.items():
        if "." not in key and not apply_known(fields, key, value):
            extra[key] = value
    return fields


def parse_rfc3164(line: str, *, default_year: int, now: float | None = None) -> Fields:
    pri, at = _pri(line)
    body = line[at:]
    # "Mmm dd hh:mm:ss HOST TAG: MSG"; single-digit days are space-padded ("Jan  5").
    parts = body.split(None, 4)
    if len(parts) < 4:
        raise InvalidRecord("RFC 3164 header incomplete")
    when = month_day(" ".join(parts[:3]), default_year=default_year, now=now)
    host = parts[3]
    rest = parts[4] if len(parts) > 4 else ""
    tag, sep, msg = rest.partition(": ")
    if not sep:
        tag, msg = "", rest
    fields = _message_fields(
        Format.SYSLOG_RFC3164, msg, host, when, default_year=default_year, now=now
    )
    if fields.format is Format.SYSLOG_RFC3164:
        fields.level = SYSLOG_LEVELS[pri & 7]
        fields.vendor_severity = str(pri & 7)
    if tag:
        fields.extra["tag"] = tag[:128]
    return fields

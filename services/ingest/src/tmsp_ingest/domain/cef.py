"""ArcSight Common Event Format, as network sensors emit it.

``CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension``. In the header,
``\\|`` and ``\\\\`` are escapes; in the extension ``\\=``, ``\\\\``, ``\\n`` and ``\\r``
are, and values may contain spaces (a value runs up to the space before the next
``key=``). Severity is 0-10 or Low/Medium/High/Very-High.

Linear time: the common case (no backslash) is a handful of ``str.split`` calls; escapes
take a one-pass scanner. No regular expression, so nothing can backtrack.
"""

from __future__ import annotations

from tmsp_common.severity import Severity
from tmsp_ingest.domain.records import KNOWN_KEYS, PORT_SLOTS, Fields, Format, InvalidRecord, port
from tmsp_ingest.domain.timeparse import any_timestamp

SEVERITY_WORDS: dict[str, Severity] = {
    "unknown": Severity.UNSPECIFIED,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "very-high": Severity.CRITICAL,
    "very high": Severity.CRITICAL,
}
# 0-3 low, 4-6 medium, 7-8 high, 9-10 very high (ArcSight's own mapping).
SEVERITY_NUMBERS: tuple[Severity, ...] = (
    Severity.LOW,
    Severity.LOW,
    Severity.LOW,
    Severity.LOW,
    Severity.MEDIUM,
    Severity.MEDIUM,
    Severity.MEDIUM,
    Severity.HIGH,
    Severity.HIGH,
    Severity.CRITICAL,
    Severity.CRITICAL,
)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.[]-")
TIME_KEYS = ("rt", "start", "end", "deviceReceiptTime")


def cef_severity(text: str) -> Severity:
    """Map a CEF severity (number 0-10 or word) to a level; InvalidRecord otherwise."""
    value = text.strip()
    if value.isdigit() and len(value) <= 2 and int(value) <= 10:
        return SEVERITY_NUMBERS[int(value)]
    level = SEVERITY_WORDS.get(value.lower())
    if level is None:
        raise InvalidRecord(f"bad CEF severity {value[:20]!r}")
    return level


def split_header(text: str) -> tuple[list[str], str]:
    """The 7 header fields (unescaped) and the raw extension text."""
    prefix_end = -1
    count = 0
    if "\\" not in text:
        parts = text.split("|", 7)
        if len(parts) < 8:
            raise InvalidRecord("CEF header has fewer than 8 fields")
        return parts[:7], parts[7]
    fields: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n and count < 7:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "|\\":
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "|":
            fields.append("".join(buf))
            buf = []
            count += 1
            prefix_end = i
        else:
            buf.append(ch)
        i += 1
    if count < 7:
        raise InvalidRecord("CEF header has fewer than 8 fields")
    return fields, text[prefix_end + 1 :]


def _unescape_value(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and i + 1 < n:
            nxt = value[i + 1]
            if nxt in "=\\":
                out.append(nxt)
                i += 2
                continue
            if nxt == "n":
                out.append("\n")
                i += 2
                continue
            if nxt == "r":
                out.append("\r")
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _is_key(word: str) -> bool:
    return word.isalnum() or (bool(word) and _KEY_CHARS.issuperset(word))


def parse_extension(text: str) -> dict[str, str]:
    """``key=value key2=value with spaces`` to a dict, escapes resolved.

    A ``=`` only starts a new pair when the word before it is a valid key; otherwise it is
    part of the previous value (senders forget to escape ``=`` inside URLs).
    """
    text = text.strip(" ")
    if not text:
        return {}
    escaped = "\\" in text
    if escaped:
        # Hide escaped characters behind private-use code points so plain splits work.
        if "\ue000" in text or "\ue001" in text:
            raise InvalidRecord("CEF extension contains reserved characters")
        text = text.replace("\\\\", "\ue000").replace("\\=", "\ue001")
    parts = text.split("=")
    if len(parts) < 2:
        raise InvalidRecord("CEF extension without key=value")
    key = parts[0]
    if not _is_key(key):
        raise InvalidRecord(f"bad CEF extension key {key[:30]!r}")
    out: dict[str, str] = {}
    pending: list[str] = []
    for mid in parts[1:-1]:
        value, sep, candidate = mid.rpartition(" ")
        if sep and _is_key(candidate):
            if pending:
                pending.append(value)
                value = "=".join(pending)
                pending = []
            out[key] = value.rstrip(" ")
            key = candidate
        else:
            pending.append(mid)
    last = parts[-1]
    if pending:
        pending.append(last)
        last = "=".join(pending)
    out[key] = last.rstrip(" ")
    if escaped:
        for name, value in out.items():
            out[name] = _unescape_value(value.replace("\ue000", "\\\\").replace("\ue001", "\\="))
    return out


def parse_cef(line: str, *, default_year: int, now: float | None = None) -> Fields:
    """Parse one CEF record (``line`` starts at ``CEF:``)."""
    if not line.startswith("CEF:"):
        raise InvalidRecord("not a CEF record")
    header, ext_text = split_header(line[4:])
    version = header[0]
    if not version.isdigit():
        raise InvalidRecord(f"bad CEF version {version[:10]!r}")
    fields = Fields(Format.CEF)
    fields.signature_id = header[4]
    fields.threat_name = header[5]
    fields.vendor_severity = header[6]
    fields.level = cef_severity(header[6])
    extra = fields.extra
    extra["device_vendor"] = header[1]
    extra["device_product"] = header[2]
    extra["device_version"] = header[3]
    ext = parse_extension(ext_text)
    known = KNOWN_KEYS
    for key, value in ext.items():
        slot = known.get(key)
        if slot is None:
            extra[key] = value
        elif slot in PORT_SLOTS:
            setattr(fields, slot, port(value))
        else:
            setattr(fields, slot, value)
    for key in TIME_KEYS:
        stamp = ext.get(key)
        if stamp:
            fields.occurred_at = any_timestamp(stamp, default_year=default_year, now=now)
            break
    fields.ep_ip = fields.src_addr
    fields.ep_host = fields.src_host
    return fields

"""JSON records: Suricata EVE and generic JSON lines.

Suricata EVE: one JSON object per line with ``timestamp``, ``event_type``, ``src_ip``,
``src_port``, ``dest_ip``, ``dest_port``, ``proto`` and, for alerts, ``alert`` (signature,
signature_id, category, severity 1 = high ... 3 = low, action), optionally ``http`` and
``fileinfo``. JSON lines: a flat object using TMSP's own field names (see ``KNOWN_KEYS``)
plus ``occurred_at``, ``severity`` and, for Threat Mitigators, ``result``.
"""

from __future__ import annotations

import json
from typing import Any

from tmsp_common.severity import Severity
from tmsp_ingest.domain.cef import SEVERITY_WORDS, cef_severity
from tmsp_ingest.domain.records import Fields, Format, InvalidRecord, apply_known
from tmsp_ingest.domain.timeparse import epoch_millis, iso8601

EVE_SEVERITY = {1: Severity.HIGH, 2: Severity.MEDIUM, 3: Severity.LOW, 4: Severity.INFORMATIONAL}
MAX_EXTRA_VALUE = 1024


def load_object(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise InvalidRecord("invalid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidRecord("JSON record is not an object")
    return obj


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))[:MAX_EXTRA_VALUE]


def _port(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRecord("bad port")
    text = str(value)
    if not text.isdigit() or int(text) > 65535:
        raise InvalidRecord(f"bad port {text[:20]!r}")
    return int(text)


def is_eve(obj: dict[str, Any]) -> bool:
    return "event_type" in obj and "timestamp" in obj


def parse_eve(obj: dict[str, Any]) -> Fields:
    fields = Fields(Format.SURICATA_EVE)
    stamp = obj.get("timestamp")
    if not isinstance(stamp, str):
        raise InvalidRecord("EVE record without timestamp")
    fields.occurred_at = iso8601(stamp)
    fields.src_addr = _text(obj.get("src_ip"))
    fields.src_port = _port(obj.get("src_port"))
    fields.dst_addr = _text(obj.get("dest_ip"))
    fields.dst_port = _port(obj.get("dest_port"))
    fields.protocol = _text(obj.get("proto"))
    fields.ep_ip = fields.src_addr
    event_type = _text(obj.get("event_type"))
    fields.extra["event_type"] = event_type
    alert = obj.get("alert")
    if isinstance(alert, dict):
        fields.threat_name = _text(alert.get("signature"))
        fields.signature_id = _text(alert.get("signature_id"))
        fields.category = _text(alert.get("category"))
        fields.action = _text(alert.get("action"))
        severity = alert.get("severity")
        fields.vendor_severity = _text(severity)
        if isinstance(severity, int) and not isinstance(severity, bool):
            fields.level = EVE_SEVERITY.get(severity, Severity.UNSPECIFIED)
    elif event_type == "alert":
        raise InvalidRecord("EVE alert without alert object")
    http = obj.get("http")
    if isinstance(http, dict):
        host = _text(http.get("hostname"))
        fields.dst_host = host
        url = _text(http.get("url"))
        fields.url = f"http://{host}{url}" if host and url.startswith("/") else url
    fileinfo = obj.get("fileinfo")
    if isinstance(fileinfo, dict):
        fields.file_hash = _text(fileinfo.get("sha256") or fileinfo.get("md5"))
    for key in ("flow_id", "in_iface", "app_proto", "community_id"):
        if key in obj:
            fields.extra[key] = _text(obj[key])
    return fields


def _severity(value: Any) -> tuple[Severity, str]:
    if isinstance(value, bool) or value is None:
        return Severity.UNSPECIFIED, ""
    if isinstance(value, int):
        if 0 <= value <= 10:
            return cef_severity(str(value)), str(value)
        raise InvalidRecord(f"bad severity {value}")
    text = _text(value)
    lowered = text.lower()
    for level in Severity:
        if level.name.lower() == lowered:
            return level, text
    if lowered in SEVERITY_WORDS or text.isdigit():
        return cef_severity(text), text
    raise InvalidRecord(f"bad severity {text[:20]!r}")


def parse_json_line(obj: dict[str, Any]) -> Fields:
    fields = Fields(Format.JSON_LINES)
    for key, value in obj.items():
        if key in ("occurred_at", "timestamp", "time"):
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields.occurred_at = epoch_millis(str(int(value)))
            elif isinstance(value, str):
                fields.occurred_at = iso8601(value)
            else:
                raise InvalidRecord(f"bad {key}")
        elif key == "severity":
            fields.level, fields.vendor_severity = _severity(value)
        elif key == "endpoint" and isinstance(value, dict):
            fields.ep_host = _text(value.get("host"))
            fields.ep_ip = _text(value.get("ip"))
            fields.ep_mac = _text(value.get("mac"))
        elif key in ("result", "outcome"):
            fields.extra["outcome"] = _text(value)
        elif key in ("src_port", "dst_port", "dest_port", "spt", "dpt"):
            apply_known(fields, key, str(_port(value)))
        elif not apply_known(fields, key, _text(value)):
            fields.extra[key] = _text(value)[:MAX_EXTRA_VALUE]
    if not fields.ep_ip:
        fields.ep_ip = fields.src_addr
    return fields


def parse_json(line: str) -> Fields:
    """An EVE or a JSON-lines record, whichever the object is."""
    obj = load_object(line)
    return parse_eve(obj) if is_eve(obj) else parse_json_line(obj)

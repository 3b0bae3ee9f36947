"""Suricata EVE and JSON-lines parsers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.severity import Severity
from tmsp_ingest.domain.jsonfmt import parse_json
from tmsp_ingest.domain.records import Format, InvalidRecord

ALERT = {
    "timestamp": "2026-11-20T10:00:00.500000+0000",
    "flow_id": 1,
    "event_type": "alert",
    "src_ip": "10.0.0.9",
    "src_port": 5555,
    "dest_ip": "203.0.113.7",
    "dest_port": 443,
    "proto": "TCP",
    "alert": {
        "action": "allowed",
        "signature_id": 2024897,
        "signature": "ET MALWARE Beacon",
        "category": "A Network Trojan was detected",
        "severity": 1,
    },
    "http": {"hostname": "evil.example", "url": "/gate.php"},
    "fileinfo": {"sha256": "ab" * 32},
}


def test_eve_alert() -> None:
    fields = parse_json(json.dumps(ALERT))
    assert fields.format is Format.SURICATA_EVE
    assert fields.occurred_at == 1795168800.5
    assert (fields.src_addr, fields.src_port, fields.dst_addr, fields.dst_port) == (
        "10.0.0.9",
        5555,
        "203.0.113.7",
        443,
    )
    assert fields.threat_name == "ET MALWARE Beacon"
    assert fields.signature_id == "2024897"
    assert fields.level is Severity.HIGH
    assert fields.url == "http://evil.example/gate.php"
    assert fields.file_hash == "ab" * 32


def test_json_line_mitigation_result() -> None:
    fields = parse_json(
        json.dumps(
            {
                "occurred_at": "2026-11-20T10:00:00Z",
                "endpoint": {"host": "pc-7", "ip": "10.0.0.7", "mac": "00:11:22:33:44:55"},
                "threat_name": "TROJ_X",
                "action": "clean",
                "result": "cleaned",
                "severity": "high",
            }
        )
    )
    assert fields.format is Format.JSON_LINES
    assert (fields.ep_host, fields.ep_ip, fields.ep_mac) == (
        "pc-7",
        "10.0.0.7",
        "00:11:22:33:44:55",
    )
    assert fields.extra["outcome"] == "cleaned"
    assert fields.level is Severity.HIGH


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(sorted({*ALERT, "severity", "occurred_at", "endpoint", "result", "x"})),
        json_values,
    )
)
def test_any_json_object_parses_or_is_rejected_with_a_reason(obj: dict[str, object]) -> None:
    try:
        parse_json(json.dumps(obj))
    except InvalidRecord as exc:
        assert exc.reason


@given(st.text(max_size=100))
def test_any_text_parses_or_is_rejected(text: str) -> None:
    try:
        parse_json(text)
    except InvalidRecord as exc:
        assert exc.reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{", "invalid JSON"),
        ("[1]", "not an object"),
        ('{"timestamp": "x", "event_type": "alert"}', "timestamp"),
        ('{"timestamp": "2026-01-01T00:00:00Z", "event_type": "alert"}', "alert object"),
        ('{"src_port": 70000}', "port"),
        ('{"severity": "apocalyptic"}', "severity"),
    ],
)
def test_json_errors(line: str, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        parse_json(line)

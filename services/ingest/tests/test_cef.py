"""CEF parser: examples from sensors and hypothesis round-trips of the escaping rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.severity import Severity
from tmsp_ingest.domain.cef import cef_severity, parse_cef, parse_extension, split_header
from tmsp_ingest.domain.records import InvalidRecord

YEAR = 2026


def escape_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=")


header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30
)
keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
# Values as senders write them: spaces inside, no leading/trailing space, no newline.
values = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Zl", "Zp", "Cc"), blacklist_characters="\ue000\ue001"
    ),
    max_size=40,
).map(lambda v: v.strip(" "))


@given(st.lists(header_text, min_size=6, max_size=6), st.integers(0, 10))
def test_header_escaping_round_trips(parts: list[str], severity: int) -> None:
    vendor, product, version, sig, name, _ = parts
    line = "CEF:0|" + "|".join(escape_header(p) for p in (vendor, product, version, sig, name))
    line += f"|{severity}|src=10.0.0.1"
    fields = parse_cef(line, default_year=YEAR)
    assert fields.extra["device_vendor"] == vendor
    assert fields.extra["device_product"] == product
    assert fields.signature_id == sig
    assert fields.threat_name == name
    assert fields.src_addr == "10.0.0.1"


@given(st.dictionaries(keys, values, min_size=1, max_size=8))
def test_extension_escaping_round_trips(pairs: dict[str, str]) -> None:
    # A value whose last word looks like "key" followed by "=" would be ambiguous even to
    # ArcSight, so such values are escaped by the sender: escape_value covers "=".
    text = " ".join(f"{k}={escape_value(v)}" for k, v in pairs.items())
    assert parse_extension(text) == pairs


@given(st.text(max_size=300))
def test_parse_cef_never_raises_anything_but_invalid_record(text: str) -> None:
    try:
        parse_cef("CEF:" + text, default_year=YEAR)
    except InvalidRecord as exc:
        assert exc.reason


def test_values_with_spaces_and_unescaped_equals_in_urls() -> None:
    ext = parse_extension("msg=Trojan found in mail request=http://a/b?x=1&y=2 act=blocked")
    assert ext == {
        "msg": "Trojan found in mail",
        "request": "http://a/b?x=1&y=2",
        "act": "blocked",
    }


def test_escaped_pipe_and_backslash_in_header() -> None:
    fields, ext = split_header(r"0|Trend\|Micro|TDA\\X|2.5|1|Name \| with pipe|5|a=b")
    assert fields[1] == "Trend|Micro"
    assert fields[2] == "TDA\\X"
    assert fields[5] == "Name | with pipe"
    assert ext == "a=b"


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("0", Severity.LOW),
        ("3", Severity.LOW),
        ("4", Severity.MEDIUM),
        ("6", Severity.MEDIUM),
        ("7", Severity.HIGH),
        ("8", Severity.HIGH),
        ("9", Severity.CRITICAL),
        ("10", Severity.CRITICAL),
        ("Low", Severity.LOW),
        ("Medium", Severity.MEDIUM),
        ("High", Severity.HIGH),
        ("Very-High", Severity.CRITICAL),
    ],
)
def test_severity_numbers_and_words(text: str, level: Severity) -> None:
    assert cef_severity(text) is level


@pytest.mark.parametrize("text", ["11", "-1", "Severe", "", "1.5"])
def test_bad_severity_is_rejected(text: str) -> None:
    with pytest.raises(InvalidRecord, match="severity"):
        cef_severity(text)


def test_full_record_maps_fields_and_time() -> None:
    fields = parse_cef(
        "CEF:0|Trend Micro|TDA|2.5|1001|Trojan|Very-High|src=10.0.0.1 spt=1234 "
        "dst=192.168.1.5 dpt=80 shost=ws-1 suser=alice act=blocked fileHash=abc "
        "cat=Malware rt=Nov 20 2026 10:00:00 cs1=a b c",
        default_year=YEAR,
    )
    assert (fields.src_addr, fields.src_port, fields.dst_addr, fields.dst_port) == (
        "10.0.0.1",
        1234,
        "192.168.1.5",
        80,
    )
    assert (fields.ep_host, fields.ep_ip, fields.user) == ("ws-1", "10.0.0.1", "alice")
    assert fields.level is Severity.CRITICAL and fields.vendor_severity == "Very-High"
    assert fields.occurred_at == 1795168800.0
    assert fields.extra["cs1"] == "a b c"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("CEF:0|a|b|c", "fewer than 8"),
        ("CEF:x|a|b|c|d|e|5|a=b", "version"),
        ("CEF:0|a|b|c|d|e|5|a=b spt=99999", "port"),
        ("CEF:0|a|b|c|d|e|5|novalue", "key=value"),
        ("CEF:0|a|b|c|d|e|5|a=b rt=yesterday", "timestamp"),
    ],
)
def test_bad_records_say_why(line: str, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        parse_cef(line, default_year=YEAR)

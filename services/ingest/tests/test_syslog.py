"""Syslog RFC 5424 and RFC 3164 parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.severity import Severity
from tmsp_ingest.domain.records import Format, InvalidRecord
from tmsp_ingest.domain.syslog import parse_rfc3164, parse_rfc5424, parse_structured_data

YEAR = 2026
NOW = 1795168800.0  # 2026-11-20T10:00:00Z

sd_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
sd_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20
)


def sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@given(st.dictionaries(sd_names, sd_values, min_size=1, max_size=5), sd_values)
def test_structured_data_round_trips(params: dict[str, str], msg: str) -> None:
    body = " ".join(f'{k}="{sd_escape(v)}"' for k, v in params.items())
    parsed, rest = parse_structured_data(f"[tmsp@1 {body}] {msg}")
    for key, value in params.items():
        assert parsed[key] == value
        assert parsed[f"tmsp@1.{key}"] == value
    assert rest == msg.lstrip(" ")


@given(st.text(max_size=200))
def test_parsers_only_raise_invalid_record(text: str) -> None:
    for parse in (parse_rfc5424, parse_rfc3164):
        for candidate in (text, "<13>" + text, "<13>1 " + text):
            try:
                parse(candidate, default_year=YEAR, now=NOW)
            except InvalidRecord as exc:
                assert exc.reason


def test_rfc5424_example_from_the_rfc() -> None:
    fields = parse_rfc5424(
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        '[exampleSDID@32473 iut="3" eventSource="Application" src="10.1.1.1"] An application event',
        default_year=YEAR,
    )
    assert fields.format is Format.SYSLOG_RFC5424
    assert fields.occurred_at == pytest.approx(1065910455.003)
    assert fields.ep_host == "mymachine.example.com"
    assert fields.signature_id == "ID47"
    assert fields.threat_name == "An application event"
    assert fields.src_addr == "10.1.1.1"
    assert fields.level is Severity.LOW  # 165 & 7 = 5 notice
    assert fields.extra["app_name"] == "evntslog"


def test_rfc5424_carrying_cef() -> None:
    fields = parse_rfc5424(
        "<134>1 2026-11-20T09:00:00Z tda-1 tda - - - CEF:0|TM|TDA|1|7|Worm|9|src=1.2.3.4",
        default_year=YEAR,
    )
    assert fields.format is Format.CEF
    assert fields.threat_name == "Worm"
    assert fields.level is Severity.CRITICAL
    assert fields.occurred_at == 1795165200.0
    assert fields.ep_host == "tda-1"


def test_rfc3164_with_padded_day_and_inferred_year() -> None:
    fields = parse_rfc3164(
        "<34>Nov  5 22:14:15 mymachine su[12]: 'su root' failed", default_year=YEAR, now=NOW
    )
    assert fields.format is Format.SYSLOG_RFC3164
    assert fields.ep_host == "mymachine"
    assert fields.threat_name == "'su root' failed"
    assert fields.extra["tag"] == "su[12]"
    assert fields.level is Severity.CRITICAL


def test_rfc3164_date_in_the_future_belongs_to_last_year() -> None:
    fields = parse_rfc3164("<34>Dec 31 23:00:00 host x: y", default_year=YEAR, now=NOW)
    dec31_2025 = 1767222000.0
    assert fields.occurred_at == dec31_2025


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no pri", "PRI"),
        ("<999>1 - - - - - -", "PRI"),
        ("<13>2 2003-10-11T22:14:15Z h a p m -", "header"),
        ("<13>1 yesterday h a p m - x", "timestamp"),
        ('<13>1 - h a p m [id k="v x', "unterminated"),
    ],
)
def test_rfc5424_errors(line: str, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        parse_rfc5424(line, default_year=YEAR)


def test_rfc3164_bad_date() -> None:
    with pytest.raises(InvalidRecord, match="timestamp|date|time"):
        parse_rfc3164("<13>Foo 31 25:00:00 host x: y", default_year=YEAR)

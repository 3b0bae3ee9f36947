"""One upload to events and rejections: detection per line, gzip, ids, mitigation results."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp.events.v1 import detections_pb2, products_pb2
from tmsp_ingest.domain.intake import (
    RAW_LIMIT,
    Rejection,
    UploadContext,
    UploadTooLarge,
    decompress,
    detect_format,
    normalise_upload,
)
from tmsp_ingest.domain.records import Format, InvalidRecord

TDA = products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE
TMI = products_pb2.PRODUCT_KIND_THREAT_MITIGATOR
NOW = 1795168800.0

CEF = b"CEF:0|TM|TDA|2.5|1001|Trojan|8|src=10.0.0.1 shost=ws-1"
MIXED = b"\n".join(
    [
        CEF,
        b"<13>1 2026-11-20T09:00:00Z h app - - - hello",
        b"<13>Nov 20 09:00:00 h app: hello",
        b'{"timestamp":"2026-11-20T09:00:00Z","event_type":"flow","src_ip":"1.1.1.1"}',
        b'{"threat_name":"X","severity":3}',
        b"",
        b"this is not a log",
        b"Nov 20 09:00:00 tda-1 CEF:0|TM|TDA|2.5|1|Y|Low|a=b",
    ]
)


def ctx(kind: int = TDA, forced: Format | None = None) -> UploadContext:
    return UploadContext("prod-1", "acct-1", kind, "upload.log", NOW, 2026, forced)


def test_mixed_upload_accepts_good_lines_and_rejects_bad_with_line_numbers() -> None:
    results = list(normalise_upload(MIXED, ctx()))
    formats = [r[1] for r in results if not isinstance(r, Rejection)]
    assert formats == [
        Format.CEF,
        Format.SYSLOG_RFC5424,
        Format.SYSLOG_RFC3164,
        Format.SURICATA_EVE,
        Format.JSON_LINES,
        Format.CEF,
    ]
    rejections = [r for r in results if isinstance(r, Rejection)]
    assert [(r.line, r.reason, r.file_name, r.product_id) for r in rejections] == [
        (7, "unknown format", "upload.log", "prod-1")
    ]


def test_event_ids_are_deterministic_and_distinct_per_line() -> None:
    first = [r[0].event_id for r in normalise_upload(CEF + b"\n" + CEF, ctx())]  # type: ignore[index]
    again = [r[0].event_id for r in normalise_upload(CEF + b"\n" + CEF, ctx())]  # type: ignore[index]
    assert first == again
    assert len(set(first)) == 2


def test_gzip_is_recognised_and_bounded() -> None:
    data = gzip.compress(MIXED)
    assert decompress(data, 10_000) == MIXED
    with pytest.raises(UploadTooLarge):
        decompress(data, 10)
    with pytest.raises(UploadTooLarge):
        decompress(b"x" * 11, 10)
    with pytest.raises(InvalidRecord, match="gzip"):
        decompress(data[:20], 10_000)


def test_threat_mitigator_results_become_mitigation_results() -> None:
    line = (
        b'{"endpoint":{"host":"pc-7","ip":"10.0.0.7"},"threat_name":"TROJ_X",'
        b'"action":"clean","result":"unresolved"}\n'
        b'{"endpoint":{"host":"pc-8"},"threat_name":"TROJ_Y","result":"exploded"}\n'
        b"CEF:0|TM|TMI|1|5|TROJ_Z|5|shost=pc-9 act=clean outcome=failed"
    )
    results = list(normalise_upload(line, ctx(TMI)))
    first = results[0]
    assert not isinstance(first, Rejection)
    message = first[0]
    assert isinstance(message, detections_pb2.MitigationResult)
    assert message.outcome == detections_pb2.MITIGATION_OUTCOME_UNRESOLVED
    assert message.endpoint.host == "pc-7"
    second = results[1]
    assert isinstance(second, Rejection) and "outcome" in second.reason
    third = results[2]
    assert not isinstance(third, Rejection)
    assert third[0].outcome == detections_pb2.MITIGATION_OUTCOME_FAILED  # type: ignore[union-attr]


def test_forced_format_rejects_other_lines() -> None:
    results = list(normalise_upload(MIXED, ctx(forced=Format.CEF)))
    accepted = [r for r in results if not isinstance(r, Rejection)]
    assert len(accepted) == 2


def test_raw_is_bounded_and_flagged() -> None:
    line = CEF + b" cs1=" + b"x" * 5000
    (result,) = list(normalise_upload(line, ctx()))
    assert not isinstance(result, Rejection)
    det = result[0]
    assert isinstance(det, detections_pb2.Detection)
    assert len(det.raw) == RAW_LIMIT and det.raw_truncated


def test_oversized_line_is_rejected() -> None:
    (result,) = list(normalise_upload(b"CEF:" + b"x" * 70_000, ctx()))
    assert isinstance(result, Rejection) and "longer" in result.reason
    assert len(result.raw) == RAW_LIMIT


@given(st.binary(max_size=400))
def test_any_bytes_yield_only_events_or_rejections(data: bytes) -> None:
    for result in normalise_upload(data, ctx()):
        if isinstance(result, Rejection):
            assert result.reason and result.line >= 1
        else:
            assert result[0].event_id


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        ("CEF:0|", Format.CEF),
        ("<13>1 2026", Format.SYSLOG_RFC5424),
        ("<13>Nov", Format.SYSLOG_RFC3164),
        ("{}", Format.JSON_LINES),
        ("Nov 20 09:00:00 h CEF:0|", Format.CEF),
    ],
)
def test_detect_format(line: str, fmt: Format) -> None:
    assert detect_format(line) is fmt

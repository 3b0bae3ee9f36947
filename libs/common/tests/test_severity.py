"""The one severity scale: its numbers are the wire enum's, its names the rules'."""

from __future__ import annotations

from tmsp.events.v1 import detections_pb2
from tmsp_common.severity import SEVERITY_NAMES, Severity


def test_the_scale_is_the_wire_enum() -> None:
    wire = {
        name.removeprefix("SEVERITY_"): number for name, number in detections_pb2.Severity.items()
    }
    assert {s.name: s.value for s in Severity} == wire


def test_names_are_in_rank_order_and_labels_read_as_words() -> None:
    assert SEVERITY_NAMES == ("unspecified", "informational", "low", "medium", "high", "critical")
    assert [Severity[n.upper()] for n in SEVERITY_NAMES] == sorted(Severity)
    assert Severity.HIGH.label == "High"
    assert Severity.CRITICAL > Severity.HIGH >= Severity.MEDIUM

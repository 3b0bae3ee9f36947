"""The PDF renderer on hand-made content, parsed back with pypdf."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pypdf import PdfReader

from tmsp_common.severity import Severity
from tmsp_reporter.adapters.pdf import render
from tmsp_reporter.domain.aggregation import summarise
from tmsp_reporter.domain.content import MAX_DETAILED_INCIDENTS, ReportContent
from tmsp_reporter.domain.model import (
    AccountRow,
    Compliance,
    IncidentStatus,
    IncidentView,
    NonconformingRow,
    ProductRow,
    TimelineStep,
)
from tmsp_reporter.domain.periods import ReportKind, period_containing

ACCOUNT = AccountRow(
    "acct-a",
    "Acme",
    "Acme Ltd",
    ("threat-discovery",),
    "a@acme.example",
    None,
    None,
    "Europe/Berlin",
    False,
)
DAY = period_containing(
    ReportKind.DAILY_ADMINISTRATIVE, datetime(2026, 6, 9, 12, tzinfo=UTC), "Europe/Berlin"
)


def content(kind: ReportKind, n: int) -> ReportContent:
    incidents = tuple(
        IncidentView(
            f"i{k}",
            "acct-a",
            f"<b>Worm</b> & co {k}",
            Severity.HIGH,
            IncidentStatus.NEW,
            DAY.start + timedelta(minutes=k),
            DAY.start + timedelta(minutes=k + 1),
            2,
            ("pc-1",),
            ("attack.execution",),
            ("Isolate the endpoint",),
        )
        for k in range(n)
    )
    product = ProductRow(
        "p1", "acct-a", "Sensor 1", 1, 1, 1, None, DAY.start, DAY.start, True, True
    )
    return ReportContent(
        report_id="rpt-x",
        kind=kind,
        account=ACCOUNT,
        period=DAY,
        generated_at=DAY.end,
        products=(product,),
        compliance=Compliance.ENABLED,
        incidents=incidents[:200],
        incidents_total=n,
        nonconforming=(
            NonconformingRow("acct-a", "pc-9", ("WORM_X",), "mitigation failed", None, "p2"),
        ),
        nonconforming_total=1,
        summary=summarise(incidents, DAY),
    )


def text_of(data: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def test_daily_administrative_report() -> None:
    pdf = render(content(ReportKind.DAILY_ADMINISTRATIVE, 3))
    text = text_of(pdf.data)
    assert pdf.data.startswith(b"%PDF") and pdf.pages == len(PdfReader(io.BytesIO(pdf.data)).pages)
    for needle in [
        "Daily administrative report: Acme",
        "Security Compliance: enabled",
        "Sensor 1",
        "Incidents of the day",
        "<b>Worm</b> & co 2",
        "pc-9",
        "mitigation failed",
    ]:
        assert needle in text


def test_executive_report_bounds_the_incident_list() -> None:
    pdf = render(content(ReportKind.WEEKLY_EXECUTIVE, 250))
    text = text_of(pdf.data)
    assert "Trend by severity" in text and "Execution" in text and "Isolate the endpoint" in text
    assert "... and 50 more incidents" in text


def test_the_most_severe_incidents_are_detailed_with_their_chain_of_events() -> None:
    """Seed 004: incident reports detail the chain of events and the recommended actions."""
    steps = tuple(
        TimelineStep(DAY.start + timedelta(seconds=k), f"e{k}", "high", f"step <{k}>", "pc-1")
        for k in range(30)
    )
    base = content(ReportKind.DAILY_ADMINISTRATIVE, MAX_DETAILED_INCIDENTS + 2)
    incidents = tuple(replace(i, timeline=steps) for i in base.incidents)
    pdf = render(replace(base, incidents=incidents))
    text = text_of(pdf.data)
    assert "Incident details: chain of events and recommended actions" in text
    # the first and the latest steps of a long chain, the rest counted
    assert "step <0>" in text and "step <9>" in text and "step <29>" in text
    assert "step <15>" not in text and "10 more steps" in text
    assert text.count("Recommended actions: Isolate the endpoint") == MAX_DETAILED_INCIDENTS
    assert "The other 2 listed incidents' chains of events are in the portal" in text


def test_a_report_without_incidents_has_no_details_section() -> None:
    text = text_of(render(content(ReportKind.WEEKLY_EXECUTIVE, 0)).data)
    assert "Incident details" not in text and "No incident in this period." in text

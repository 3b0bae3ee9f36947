"""The PDF renderer on hand-made content, parsed back with pypdf."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from pypdf import PdfReader

from tmsp_common.severity import Severity
from tmsp_reporter.adapters.pdf import render
from tmsp_reporter.domain.aggregation import summarise
from tmsp_reporter.domain.content import ReportContent
from tmsp_reporter.domain.model import (
    AccountRow,
    Compliance,
    IncidentStatus,
    IncidentView,
    NonconformingRow,
    ProductRow,
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

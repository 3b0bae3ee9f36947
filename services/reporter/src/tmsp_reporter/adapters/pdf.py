"""PDF rendering with reportlab (platypus). Pure CPU: call it in a worker thread.

Everything that comes from logs or appliances (titles, host names, threat names) is
escaped before it reaches reportlab's paragraph markup.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from tmsp_reporter.domain.aggregation import REPORTED_SEVERITIES
from tmsp_reporter.domain.content import (
    MAX_DETAILED_INCIDENTS,
    MAX_DETAILED_STEPS,
    ReportContent,
)
from tmsp_reporter.domain.model import Compliance, TimelineStep
from tmsp_reporter.domain.periods import ReportKind, zone

SEVERITY_COLOURS = {
    "Critical": colors.HexColor("#7f0000"),
    "High": colors.HexColor("#d7301f"),
    "Medium": colors.HexColor("#fc8d59"),
    "Low": colors.HexColor("#fdcc8a"),
    "Informational": colors.HexColor("#bdbdbd"),
}
LIVENESS = {0: "unknown", 1: "online", 2: "offline", 3: "logs not received", 4: "online"}
KINDS = {1: "Threat Discovery Appliance", 2: "Threat Mitigator"}
STATES = {0: "", 1: "active", 2: "disabled", 3: "deregistered"}


@dataclass(frozen=True)
class RenderedPdf:
    data: bytes
    pages: int


class _Styles:
    def __init__(self) -> None:
        base = getSampleStyleSheet()
        self.title = base["Title"]
        self.h2 = base["Heading2"]
        self.h3 = base["Heading4"]
        self.body = base["BodyText"]
        self.small = ParagraphStyle("small", parent=base["BodyText"], fontSize=8, leading=10)
        self.note = ParagraphStyle(
            "note", parent=base["BodyText"], fontSize=8, textColor=colors.grey
        )


def _p(text: object, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape("" if text is None else str(text)), style)


class _Renderer:
    def __init__(self, content: ReportContent) -> None:
        self.c = content
        self.s = _Styles()
        self.tz = zone(content.period.time_zone)
        self.story: list[Flowable] = []

    def when(self, at: datetime | None) -> str:
        return at.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if at else "never"

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[float]
    ) -> None:
        data = [[_p(h, self.s.small) for h in header]]
        data.extend([_p(v, self.s.small) for v in row] for row in rows)
        table = Table(data, colWidths=[w * mm for w in widths], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        self.story.append(table)
        self.story.append(Spacer(1, 4 * mm))

    def heading(self, text: str) -> None:
        self.story.append(Paragraph(escape(text), self.s.h2))

    def note(self, text: str) -> None:
        self.story.append(_p(text, self.s.note))

    def header(self) -> None:
        a = self.c.account
        self.story.append(_p(self.c.title, self.s.title))
        rows = [
            ("Account", a.name or a.account_id),
            ("Company", a.company_name),
            ("Period", f"{self.c.period.label()} ({self.c.period.time_zone})"),
            ("Generated", f"{self.when(self.c.generated_at)} ({self.c.period.time_zone})"),
            ("Managed by", a.managed_by),
            ("Services", ", ".join(a.services)),
            ("Report id", self.c.report_id),
        ]
        self.table(("Item", "Value"), rows, (40, 130))

    def products(self) -> None:
        self.heading("Registered products")
        compliance = {
            Compliance.UNKNOWN: "unknown (no heartbeat from a Threat Discovery Appliance)",
            Compliance.ENABLED: "enabled",
            Compliance.DISABLED: "disabled",
            Compliance.PARTIAL: "enabled on some appliances only",
        }[self.c.compliance]
        self.story.append(_p(f"Security Compliance: {compliance}", self.s.body))
        rows = [
            (
                p.name or p.product_id,
                KINDS.get(p.kind, "unknown"),
                STATES.get(p.state, ""),
                LIVENESS.get(p.liveness, "unknown"),
                self.when(p.last_received),
                self.when(p.last_heartbeat),
                ""
                if p.security_compliance is None
                else ("enabled" if p.security_compliance else "disabled"),
            )
            for p in self.c.products
        ]
        if rows:
            self.table(
                ("Product", "Kind", "State", "Liveness", "Last received", "Heartbeat", "SC"),
                rows,
                (32, 30, 18, 22, 26, 26, 16),
            )
        else:
            self.note("No registered product.")

    def incident_list(self, heading: str) -> None:
        self.heading(heading)
        if not self.c.incidents:
            self.note("No incident in this period.")
            return
        rows = [
            (
                i.severity.label,
                i.title,
                i.status.name.replace("_", " ").lower(),
                self.when(i.first_seen),
                self.when(i.last_seen),
                ", ".join(i.endpoints[:5]),
                i.event_count,
            )
            for i in self.c.incidents
        ]
        self.table(
            ("Severity", "Incident", "Status", "First seen", "Last seen", "Endpoints", "Events"),
            rows,
            (18, 44, 18, 24, 24, 30, 12),
        )
        if self.c.incidents_total > len(self.c.incidents):
            more = self.c.incidents_total - len(self.c.incidents)
            self.note(f"... and {more} more incidents (see the consolidated logs).")

    def incident_details(self) -> None:
        """The most severe incidents with their chain of events, recommended actions and
        ATT&CK tags (what an incident report details, seed 004)."""
        detailed = self.c.incidents[:MAX_DETAILED_INCIDENTS]
        if not detailed:
            return
        self.heading("Incident details: chain of events and recommended actions")
        for i in detailed:
            status = i.status.name.replace("_", " ").lower()
            self.story.append(_p(f"[{i.severity.label}] {i.title} ({status})", self.s.h3))
            self.story.append(
                _p(
                    f"{self.when(i.first_seen)} to {self.when(i.last_seen)}, {i.event_count} "
                    f"events, endpoints: {', '.join(i.endpoints[:5]) or 'none'}",
                    self.s.body,
                )
            )
            steps: list[TimelineStep | None] = list(i.timeline)
            if len(steps) > MAX_DETAILED_STEPS:
                half = MAX_DETAILED_STEPS // 2
                omitted = len(steps) - MAX_DETAILED_STEPS
                steps = [*steps[:half], None, *steps[-half:]]
            else:
                omitted = 0
            if steps:
                rows = [
                    (self.when(t.at), t.summary, t.endpoint)
                    if t is not None
                    else ("...", f"{omitted} more steps", "")
                    for t in steps
                ]
                self.table(("Time", "Step", "Endpoint"), rows, (28, 112, 30))
            if i.recommended_actions:
                actions = "; ".join(i.recommended_actions)
                self.story.append(_p(f"Recommended actions: {actions}", self.s.body))
            if i.attack_tags:
                self.story.append(_p(f"ATT&CK: {', '.join(i.attack_tags)}", self.s.small))
            self.story.append(Spacer(1, 3 * mm))
        if len(self.c.incidents) > len(detailed):
            self.note(
                f"The other {len(self.c.incidents) - len(detailed)} listed incidents' chains "
                "of events are in the portal and the consolidated logs."
            )

    def nonconforming(self) -> None:
        self.heading("Nonconforming endpoints")
        if not self.c.nonconforming:
            self.note("No nonconforming endpoint.")
            return
        rows = [
            (n.endpoint, ", ".join(n.threats[:5]), n.reason, self.when(n.since))
            for n in self.c.nonconforming
        ]
        self.table(("Endpoint", "Threats", "Reason", "Since"), rows, (40, 70, 30, 30))
        if self.c.nonconforming_total > len(self.c.nonconforming):
            more = self.c.nonconforming_total - len(self.c.nonconforming)
            self.note(f"... and {more} more endpoints.")

    def trend_chart(self) -> None:
        trend = self.c.summary.trend
        if not trend:
            return
        drawing = Drawing(170 * mm, 60 * mm)
        chart = VerticalBarChart()
        chart.x, chart.y = 12 * mm, 10 * mm
        chart.width, chart.height = 150 * mm, 45 * mm
        chart.data = [[b.by_severity[s] for b in trend] for s in REPORTED_SEVERITIES]
        chart.categoryAxis.style = "stacked"
        chart.categoryAxis.categoryNames = [
            b.label[-5:] if len(trend) > 7 else b.label for b in trend
        ]
        chart.categoryAxis.labels.fontSize = 6
        chart.categoryAxis.labels.angle = 45 if len(trend) > 7 else 0
        chart.valueAxis.valueMin = 0
        for n, s in enumerate(REPORTED_SEVERITIES):
            chart.bars[n].fillColor = SEVERITY_COLOURS[s.label]
        drawing.add(chart)
        self.story.append(drawing)

    def executive(self) -> None:
        s = self.c.summary
        self.heading("Incident totals")
        change = "" if s.change is None else f"; {s.change:+d} compared with the previous period"
        self.story.append(_p(f"{s.total} incidents, {s.open} still open{change}.", self.s.body))
        self.table(
            ("Severity", "Incidents"),
            [(sev.label, s.by_severity[sev]) for sev in REPORTED_SEVERITIES],
            (40, 30),
        )
        self.heading("Trend by severity")
        self.trend_chart()
        self.table(
            ("Period", *[sev.label for sev in REPORTED_SEVERITIES], "Total"),
            [
                (b.label, *[b.by_severity[sev] for sev in REPORTED_SEVERITIES], b.total)
                for b in s.trend
            ],
            (36, 22, 22, 22, 22, 26, 18),
        )
        self.heading("Top threats")
        if s.top_threats:
            self.table(
                ("Threat", "Incidents", "Worst severity"),
                [(t, n, sev.label) for t, n, sev in s.top_threats],
                (110, 25, 35),
            )
        else:
            self.note("No threat in this period.")
        self.heading("Most affected endpoints")
        if s.top_endpoints:
            self.table(("Endpoint", "Incidents"), s.top_endpoints, (120, 30))
        else:
            self.note("No endpoint affected.")
        self.heading("MITRE ATT&CK tactics")
        if s.tactics or s.techniques:
            rows = [(t.replace("_", " ").title(), n) for t, n in s.tactics]
            rows += [(f"Technique {t}", n) for t, n in s.techniques]
            self.table(("Tactic / technique", "Incidents"), rows, (120, 30))
        else:
            self.note("No ATT&CK tag on this period's incidents.")
        self.heading("Recommended actions")
        if s.recommended_actions:
            self.table(("Action", "Incidents"), s.recommended_actions, (140, 25))
        else:
            self.note("No recommended action.")

    def build(self) -> RenderedPdf:
        self.header()
        if self.c.kind is ReportKind.DAILY_ADMINISTRATIVE:
            if self.c.daily_count is not None:
                self.story.append(
                    _p(
                        f"Incident count of the daily update: {self.c.daily_count.open_incidents}"
                        f" open, {self.c.daily_count.total_incidents} in total (as of "
                        f"{self.when(self.c.daily_count.as_of)}).",
                        self.s.body,
                    )
                )
            self.products()
            self.incident_list("Incidents of the day")
            self.nonconforming()
        else:
            self.executive()
            self.incident_list("Incidents of the period (most severe first)")
        self.incident_details()
        buffer = io.BytesIO()
        pages = [0]

        def count(canvas: object, _doc: object) -> None:
            pages[0] += 1

        doc = SimpleDocTemplate(
            buffer,
            pagesize=A4,
            title=self.c.title,
            author="TMSP",
            subject=self.c.report_id,
            leftMargin=15 * mm,
            rightMargin=15 * mm,
            topMargin=15 * mm,
            bottomMargin=15 * mm,
        )
        doc.build(self.story, onFirstPage=count, onLaterPages=count)
        return RenderedPdf(buffer.getvalue(), pages[0])


def render(content: ReportContent) -> RenderedPdf:
    """The report as a PDF (A4)."""
    return _Renderer(content).build()

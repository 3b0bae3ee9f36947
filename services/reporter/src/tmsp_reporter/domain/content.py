"""What one report contains, assembled by the report use case and drawn by the PDF adapter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tmsp_reporter.domain.aggregation import ExecutiveSummary
from tmsp_reporter.domain.model import (
    AccountRow,
    Compliance,
    IncidentCountRow,
    IncidentView,
    NonconformingRow,
    ProductRow,
)
from tmsp_reporter.domain.periods import Period, ReportKind, zone

MAX_LISTED_INCIDENTS = 200
MAX_DETAILED_INCIDENTS = 10
"""Of the listed incidents, the most severe ones shown with their chain of events."""
MAX_DETAILED_STEPS = 20
"""Chain-of-events steps shown per detailed incident (its first and its latest)."""
MAX_LISTED_ENDPOINTS = 200
MAX_LISTED_PRODUCTS = 200


@dataclass(frozen=True)
class ReportContent:
    report_id: str
    kind: ReportKind
    account: AccountRow
    period: Period
    generated_at: datetime
    products: tuple[ProductRow, ...]
    compliance: Compliance
    incidents: tuple[IncidentView, ...]
    """Listed incidents (most severe first), at most MAX_LISTED_INCIDENTS."""
    incidents_total: int
    nonconforming: tuple[NonconformingRow, ...]
    nonconforming_total: int
    summary: ExecutiveSummary
    daily_count: IncidentCountRow | None = None

    @property
    def title(self) -> str:
        return f"{self.kind.display_name}: {self.account.name or self.account.account_id}"

    @property
    def filename(self) -> str:
        day = self.period.start.astimezone(zone(self.period.time_zone)).strftime("%Y%m%d")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.account.account_id)
        return f"tmsp-{self.kind.value}-{safe[:40]}-{day}.pdf"

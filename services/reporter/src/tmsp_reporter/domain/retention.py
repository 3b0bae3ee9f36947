"""Log maintenance: how long reports and incidents/logs are kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tmsp_common.errors import InvalidArgument

MAX_DAYS = 3650
DEFAULT_REPORT_DAYS = 365
DEFAULT_LOG_DAYS = 180


@dataclass(frozen=True)
class LogMaintenance:
    report_retention_days: int = DEFAULT_REPORT_DAYS
    log_retention_days: int = DEFAULT_LOG_DAYS
    updated_at: datetime | None = None

    def validated(self) -> LogMaintenance:
        for name in ("report_retention_days", "log_retention_days"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_DAYS:
                raise InvalidArgument(name, f"between 1 and {MAX_DAYS} days")
        return self

    def report_cutoff(self, now: datetime) -> datetime:
        """Reports created before this are removed."""
        return now - timedelta(days=self.report_retention_days)

    def log_cutoff(self, now: datetime) -> datetime:
        """Incidents last seen, endpoints cleared and forensic data received before this
        are removed."""
        return now - timedelta(days=self.log_retention_days)

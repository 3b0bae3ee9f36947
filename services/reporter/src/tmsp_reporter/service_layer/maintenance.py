"""Log maintenance: retention settings and the periodic purge (reports, incidents/logs).

Deleting an account removes no report: reports go only when their retention is over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tmsp_common.clock import Clock
from tmsp_common.logging import get_logger
from tmsp_reporter.adapters.mongo import ReadModel, ReportStore
from tmsp_reporter.domain.retention import LogMaintenance
from tmsp_reporter.service_layer.metrics import PURGED

log = get_logger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    reports: int
    incidents: int
    endpoints: int


class Maintenance:
    def __init__(self, read: ReadModel, store: ReportStore, clock: Clock) -> None:
        self.read = read
        self.store = store
        self.clock = clock

    async def get(self) -> LogMaintenance:
        return await self.store.log_maintenance()

    async def set(self, wanted: LogMaintenance) -> LogMaintenance:
        stored = replace(wanted.validated(), updated_at=self.clock.now())
        await self.store.set_log_maintenance(stored)
        return stored

    async def purge(self) -> PurgeResult:
        """Remove what the retention settings say is too old, as of the clock's now."""
        settings = await self.store.log_maintenance()
        now = self.clock.now()
        reports = await self.store.purge(settings.report_cutoff(now))
        incidents, endpoints = await self.read.purge_logs(settings.log_cutoff(now))
        result = PurgeResult(reports, incidents, endpoints)
        PURGED.labels("reports").inc(reports)
        PURGED.labels("incidents").inc(incidents)
        PURGED.labels("endpoints").inc(endpoints)
        if reports or incidents or endpoints:
            log.info(
                "log maintenance purged",
                reports=reports,
                incidents=incidents,
                endpoints=endpoints,
            )
        return result

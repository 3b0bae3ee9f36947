"""Log maintenance: retention settings and the periodic purge (reports, incidents/logs,
forensic data: log retention, by when the log server received the file).

Deleting an account removes no report: reports go only when their retention is over.

The settings are published on ``tmsp.log-maintenance.v1`` when they change and when the
reporter starts, so the correlator applies the same retention to its own incident store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tmsp.events.v1 import maintenance_pb2
from tmsp_common.clock import Clock
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import LOG_MAINTENANCE
from tmsp_common.logging import get_logger
from tmsp_reporter.adapters.mongo import ReadModel, ReportStore
from tmsp_reporter.domain.retention import LogMaintenance
from tmsp_reporter.service_layer.forensics import ForensicData
from tmsp_reporter.service_layer.metrics import PURGED
from tmsp_reporter.service_layer.ports import Publisher

log = get_logger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    reports: int
    incidents: int
    endpoints: int
    forensic_files: int = 0


class Maintenance:
    def __init__(
        self,
        read: ReadModel,
        store: ReportStore,
        forensics: ForensicData,
        publisher: Publisher,
        clock: Clock,
    ) -> None:
        self.read = read
        self.store = store
        self.forensics = forensics
        self.publisher = publisher
        self.clock = clock

    async def get(self) -> LogMaintenance:
        return await self.store.log_maintenance()

    async def set(self, wanted: LogMaintenance) -> LogMaintenance:
        """Store and publish the settings (Unavailable when the bus did not take them: a
        retry stores and publishes them again)."""
        now = self.clock.now()
        # as stored (BSON dates hold milliseconds), so a republication at start-up is equal
        stamped = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stored = replace(wanted.validated(), updated_at=stamped)
        await self.store.set_log_maintenance(stored)
        await self.announce(stored)
        return stored

    async def announce(self, settings: LogMaintenance | None = None) -> None:
        """Publish the settings (the stored ones by default) for the other services."""
        m = settings or await self.store.log_maintenance()
        msg = maintenance_pb2.LogMaintenanceSettings(
            report_retention_days=m.report_retention_days,
            log_retention_days=m.log_retention_days,
        )
        if m.updated_at is not None:
            msg.updated_at.CopyFrom(to_timestamp(m.updated_at))
        await self.publisher.publish(LOG_MAINTENANCE, msg, key=LOG_MAINTENANCE.key)

    async def purge(self) -> PurgeResult:
        """Remove what the retention settings say is too old, as of the clock's now."""
        settings = await self.store.log_maintenance()
        now = self.clock.now()
        reports = await self.store.purge(settings.report_cutoff(now))
        incidents, endpoints = await self.read.purge_logs(settings.log_cutoff(now))
        forensic = await self.forensics.purge(settings.log_cutoff(now))
        result = PurgeResult(reports, incidents, endpoints, forensic)
        PURGED.labels("reports").inc(reports)
        PURGED.labels("incidents").inc(incidents)
        PURGED.labels("endpoints").inc(endpoints)
        PURGED.labels("forensic_files").inc(forensic)
        if reports or incidents or endpoints or forensic:
            log.info(
                "log maintenance purged",
                reports=reports,
                incidents=incidents,
                endpoints=endpoints,
                forensic_files=forensic,
            )
        return result

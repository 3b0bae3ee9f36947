"""Log maintenance: the portal's retention applied to the correlator's own store.

The provider's operators set how long incidents and logs are kept in the portal (the
reporter's ``SetLogMaintenance``); the reporter publishes the settings on the bus when they
change and when it starts. The correlator keeps the newest it heard and, on a timer, removes
incidents last seen longer ago and nonconforming endpoints cleared longer ago, as the
reporter does in its read model. Until it has heard the settings it removes nothing.

An open incident that is removed and then matched again is written afresh by its group
(the store inserts what it does not find); a triage decision on a removed incident that
its group left behind is refused (unknown incident), as the portal no longer lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tmsp_common.logging import get_logger
from tmsp_correlator.service_layer.ports import (
    IncidentRepository,
    MaintenanceRepository,
    NonconformingRepository,
)

log = get_logger(__name__)

MAX_DAYS = 3650


@dataclass(frozen=True)
class Purged:
    incidents: int
    endpoints: int


class LogRetention:
    def __init__(
        self,
        settings: MaintenanceRepository,
        incidents: IncidentRepository,
        nonconforming: NonconformingRepository,
    ) -> None:
        self.settings = settings
        self.incidents = incidents
        self.nonconforming = nonconforming

    async def heard(self, log_retention_days: int, updated_at: datetime | None) -> bool:
        """Keep settings from the bus unless newer ones are kept; out-of-range days (a
        producer's bug) are refused with ValueError, as the portal never allows them."""
        if not 1 <= log_retention_days <= MAX_DAYS:
            raise ValueError(f"log retention of {log_retention_days} days is not 1-{MAX_DAYS}")
        kept = await self.settings.set_log_retention(log_retention_days, updated_at)
        if kept:
            log.info("log maintenance settings", log_retention_days=log_retention_days)
        return kept

    async def purge(self, now: float) -> Purged | None:
        """Remove what is older than the retention as of ``now`` (epoch s); None when no
        settings were heard yet."""
        known = await self.settings.log_retention()
        if known is None:
            return None
        cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=known[0])
        purged = Purged(
            incidents=await self.incidents.purge(cutoff),
            endpoints=await self.nonconforming.purge_cleared(cutoff.timestamp()),
        )
        if purged.incidents or purged.endpoints:
            log.info(
                "log maintenance purged",
                incidents=purged.incidents,
                endpoints=purged.endpoints,
                log_retention_days=known[0],
            )
        return purged

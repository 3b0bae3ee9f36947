"""Log maintenance applied to the correlator's store (pure: fakes for the repositories)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tmsp_correlator.service_layer.retention import MAX_DAYS, LogRetention, Purged


class Fakes:
    def __init__(self) -> None:
        self.days: tuple[int, datetime | None] | None = None
        self.incident_cutoffs: list[datetime] = []
        self.endpoint_cutoffs: list[float] = []

    async def log_retention(self) -> tuple[int, datetime | None] | None:
        return self.days

    async def set_log_retention(self, days: int, updated_at: datetime | None) -> bool:
        self.days = (days, updated_at)
        return True

    async def purge(self, last_seen_before: datetime) -> int:
        self.incident_cutoffs.append(last_seen_before)
        return 2

    async def purge_cleared(self, updated_before: float) -> int:
        self.endpoint_cutoffs.append(updated_before)
        return 1


async def test_nothing_is_purged_before_the_portal_s_settings_are_heard() -> None:
    f = Fakes()
    retention = LogRetention(f, f, f)  # type: ignore[arg-type]
    assert await retention.purge(1_800_000_000.0) is None
    assert f.incident_cutoffs == [] and f.endpoint_cutoffs == []


async def test_the_cutoff_is_the_retention_before_now_for_incidents_and_endpoints() -> None:
    f = Fakes()
    retention = LogRetention(f, f, f)  # type: ignore[arg-type]
    assert await retention.heard(10, None)
    now = 1_800_000_000.0
    assert await retention.purge(now) == Purged(incidents=2, endpoints=1)
    assert f.incident_cutoffs == [datetime.fromtimestamp(now - 10 * 86_400, UTC)]
    assert f.endpoint_cutoffs == [now - 10 * 86_400]


@pytest.mark.parametrize("days", [0, MAX_DAYS + 1])
async def test_settings_out_of_the_portal_s_range_are_refused(days: int) -> None:
    f = Fakes()
    with pytest.raises(ValueError, match=f"log retention of {days} days"):
        await LogRetention(f, f, f).heard(days, None)  # type: ignore[arg-type]
    assert f.days is None

"""Use cases around incidents: store and publish, live and daily counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import INCIDENT_COUNTS, INCIDENTS
from tmsp_common.logging import get_logger
from tmsp_correlator.domain.fields import SEVERITY_RANK
from tmsp_correlator.service_layer.ports import IncidentRepository, Publisher

log = get_logger(__name__)

STATUS = {
    "new": incidents_pb2.INCIDENT_STATUS_NEW,
    "investigating": incidents_pb2.INCIDENT_STATUS_INVESTIGATING,
    "resolved": incidents_pb2.INCIDENT_STATUS_RESOLVED,
    "false_positive": incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE,
}
OPEN_STATUSES = ("new", "investigating")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def incident_message(inc: dict[str, Any], now: datetime) -> incidents_pb2.Incident:
    """The bus form of an incident state dict (see domain.correlation)."""
    msg = incidents_pb2.Incident(
        incident_id=inc["id"],
        account_id=inc["account_id"],
        rule_ids=inc["rule_ids"],
        title=inc["title"],
        description=inc.get("description", ""),
        severity=SEVERITY_RANK.get(inc["severity"], 0),  # type: ignore[arg-type]
        event_count=inc["count"],
        event_ids=inc["event_ids"],
        attack_tags=inc["tags"],
        recommended_actions=inc["actions"],
        status=STATUS.get(inc.get("status", "new"), incidents_pb2.INCIDENT_STATUS_NEW),
        version=inc["version"],
    )
    for host, ip, mac in inc["endpoints"]:
        msg.endpoints.append(detections_pb2.Endpoint(host=host, ip=ip, mac=mac))
    msg.first_seen.CopyFrom(to_timestamp(_dt(inc["first"])))
    msg.last_seen.CopyFrom(to_timestamp(_dt(inc["last"])))
    msg.updated_at.CopyFrom(to_timestamp(now))
    for at, eid, rule_id, summary, host, ip, mac in inc["timeline"]:
        entry = msg.timeline.add(event_id=eid, rule_id=rule_id, summary=summary)
        entry.at.CopyFrom(to_timestamp(_dt(at)))
        entry.endpoint.CopyFrom(detections_pb2.Endpoint(host=host, ip=ip, mac=mac))
    return msg


class IncidentRecorder:
    """Stores an incident (idempotent upsert, version guard), then publishes it and counts.

    Live counts are recomputed from the store, which costs a collection scan on FerretDB:
    with ``live_count_interval_s`` > 0 a batch only marks its accounts as due, and
    ``publish_due_counts`` (a timer of that interval) publishes one count per due account,
    so an account gets at most one live count per interval and its last change is always
    counted. With 0 each batch publishes its accounts' counts itself.
    """

    def __init__(
        self, repo: IncidentRepository, publisher: Publisher, *, live_count_interval_s: float = 0
    ) -> None:
        self.repo = repo
        self.publisher = publisher
        self.live_count_interval_s = live_count_interval_s
        self._counts_due: set[str] = set()

    async def record_many(self, changes: list[tuple[dict[str, Any], bool]]) -> None:
        """Store a batch of incident changes in one write, publish each, then the live counts.

        ``changes`` holds (incident, opened in this batch); an incident appears once, in its
        newest version. Each account that gained an incident is due for a live count.
        """
        if not changes:
            return
        now = datetime.now(UTC)
        stored = await self.repo.upsert_many([inc for inc, _ in changes])
        # published even when already stored: a replay after a crash between the write and
        # the publish must still publish (same key and version: an idempotent upsert)
        for inc, new in changes:
            await self.publisher.publish(
                INCIDENTS,
                incident_message(inc, now),
                key=inc["id"],
                account_id=inc["account_id"],
                occurred_at=_dt(inc["last"]),
            )
            log.info(
                "incident recorded" if inc["id"] in stored else "incident re-published",
                incident_id=inc["id"],
                account_id=inc["account_id"],
                version=inc["version"],
                new=new,
            )
        self._counts_due.update(inc["account_id"] for inc, new in changes if new)
        if not self.live_count_interval_s:
            await self.publish_due_counts()

    async def publish_due_counts(self) -> int:
        """A live count for each account that gained incidents since its last one."""
        # taken off before counting: a batch stored meanwhile marks its account due again
        due = sorted(self._counts_due)
        self._counts_due.difference_update(due)
        for n, account_id in enumerate(due):
            try:
                await self.publish_count(account_id, daily=False)
            except BaseException:
                self._counts_due.update(due[n:])
                raise
        return len(due)

    async def publish_count(self, account_id: str, *, daily: bool) -> None:
        open_, total = await self.repo.counts(account_id)
        await self._count(account_id, open_, total, daily)

    async def _count(self, account_id: str, open_: int, total: int, daily: bool) -> None:
        msg = incidents_pb2.IncidentCount(
            account_id=account_id, open_incidents=open_, total_incidents=total, daily=daily
        )
        msg.as_of.CopyFrom(to_timestamp(datetime.now(UTC)))
        await self.publisher.publish(INCIDENT_COUNTS, msg, key=account_id, account_id=account_id)

    async def publish_daily_counts(self) -> int:
        """The seed's once-a-day update (02:00): one count per account; returns how many."""
        counts = await self.repo.all_counts()
        for account_id, (open_, total) in sorted(counts.items()):
            await self._count(account_id, open_, total, daily=True)
        log.info("daily incident counts published", accounts=len(counts))
        return len(counts)

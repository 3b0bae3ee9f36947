"""Use cases around incidents: publish, store from the bus, live and daily counts.

The correlate stage publishes each new or changed incident on INCIDENTS (durable in Kafka
before its hits are acknowledged); the store stage consumes INCIDENTS and writes the newest
version of each incident of a batch to the correlator's database (committing after the
write). So a slow database delays the stored copy, never the correlation itself, and an
incident that changes many times while a write is under way is written once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp_common.kafka.envelope import (
    EnvelopeError,
    epoch_seconds,
    set_epoch_seconds,
    to_timestamp,
)
from tmsp_common.kafka.topics import INCIDENT_COUNTS, INCIDENTS
from tmsp_common.logging import get_logger
from tmsp_common.severity import SEVERITY_NAMES
from tmsp_correlator.domain.correlation import Hit, set_status
from tmsp_correlator.domain.fields import SEVERITY_RANK
from tmsp_correlator.service_layer.events import STATUS_NAMES
from tmsp_correlator.service_layer.ports import IncidentRepository, Publisher

log = get_logger(__name__)

STATUS = {name: value for value, name in STATUS_NAMES.items()}


class StatusChangeRefused(EnvelopeError):
    """A status change that cannot apply (the reason is the message): like an undecodable
    record, dead-lettered at once rather than retried."""


OPENED_IDS_LOGGED = 10
"""The "incidents opened" line of a batch names at most this many of them."""


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
        group=inc.get("group", {}),
        group_key=inc.get("key", ""),
        status_note=inc.get("note", ""),
        status_changed_by_user_id=inc.get("by", ""),
    )
    if inc.get("changed_at"):
        set_epoch_seconds(msg.status_changed_at, inc["changed_at"])
    # field by field, empty ones left unset: twice as fast as nested keyword construction
    # (an incident is published in full at each version, with up to 200 timeline entries)
    for host, ip, mac in inc["endpoints"]:
        _set_endpoint(msg.endpoints.add(), host, ip, mac)
    set_epoch_seconds(msg.first_seen, inc["first"])
    set_epoch_seconds(msg.last_seen, inc["last"])
    msg.updated_at.CopyFrom(to_timestamp(now))
    timeline = msg.timeline
    for at, eid, rule_id, summary, host, ip, mac in inc["timeline"]:
        entry = timeline.add(event_id=eid, rule_id=rule_id, summary=summary)
        set_epoch_seconds(entry.at, at)
        _set_endpoint(entry.endpoint, host, ip, mac)
    return msg


def _set_endpoint(e: detections_pb2.Endpoint, host: str, ip: str, mac: str) -> None:
    """Fill an endpoint field in place; present even when empty (readers tell an unknown
    endpoint from none by presence)."""
    e.SetInParent()
    if host:
        e.host = host
    if ip:
        e.ip = ip
    if mac:
        e.mac = mac


def _endpoint(e: detections_pb2.Endpoint) -> list[str]:
    return [e.host, e.ip, e.mac]


def incident_from_message(msg: incidents_pb2.Incident) -> dict[str, Any]:
    """The incident state dict of a bus message (the inverse of :func:`incident_message`)."""
    return {
        "id": msg.incident_id,
        "account_id": msg.account_id,
        "rule_ids": list(msg.rule_ids),
        "title": msg.title,
        "description": msg.description,
        "severity": SEVERITY_NAMES[msg.severity] if msg.severity < len(SEVERITY_NAMES) else "",
        "group": dict(msg.group),
        "endpoints": [_endpoint(e) for e in msg.endpoints],
        "first": epoch_seconds(msg.first_seen),
        "last": epoch_seconds(msg.last_seen),
        "count": msg.event_count,
        "event_ids": list(msg.event_ids),
        "timeline": [
            [epoch_seconds(t.at), t.event_id, t.rule_id, t.summary, *_endpoint(t.endpoint)]
            for t in msg.timeline
        ],
        "tags": list(msg.attack_tags),
        "actions": list(msg.recommended_actions),
        "status": STATUS_NAMES.get(msg.status, "new"),
        "version": msg.version,
        **_triage_fields(msg),
    }


def _triage_fields(msg: incidents_pb2.Incident) -> dict[str, Any]:
    """The group key and the last triage decision, where the message has them."""
    out: dict[str, Any] = {}
    if msg.group_key:
        out["key"] = msg.group_key
    if msg.HasField("status_changed_at"):
        out.update(
            note=msg.status_note,
            by=msg.status_changed_by_user_id,
            changed_at=epoch_seconds(msg.status_changed_at),
        )
    return out


class IncidentRecorder:
    """Publishes incidents, stores them from the bus, and publishes the incident counts.

    Live counts are recomputed from the store, which costs a collection scan on FerretDB:
    with ``live_count_interval_s`` > 0 a stored batch only marks its accounts as due, and
    ``publish_due_counts`` (a timer of that interval) publishes one count per due account,
    so an account gets at most one live count per interval and its last change is always
    counted. With 0 each stored batch publishes its accounts' counts itself.
    """

    def __init__(
        self, repo: IncidentRepository, publisher: Publisher, *, live_count_interval_s: float = 0
    ) -> None:
        self.repo = repo
        self.publisher = publisher
        self.live_count_interval_s = live_count_interval_s
        self._counts_due: set[str] = set()

    async def publish_many(self, changes: list[tuple[dict[str, Any], bool]]) -> None:
        """Publish a correlate batch's incidents: (incident, opened in this batch) each once,
        in its newest version. Also when the incident was published before: a replay after
        a crash must still publish (same key and version: an idempotent upsert)."""
        now = datetime.now(UTC)
        opened: list[str] = []
        for inc, new in changes:
            await self.publisher.publish(
                INCIDENTS,
                incident_message(inc, now),
                key=inc["id"],
                account_id=inc["account_id"],
                occurred_at=_dt(inc["last"]),
            )
            if new:
                opened.append(inc["id"])
        if opened:
            # one line per batch: an outbreak opens thousands a second, and each one is on
            # INCIDENTS and in the store already (a line each was 5 % of the worker's time)
            log.info(
                "incidents opened",
                count=len(opened),
                incident_ids=opened[:OPENED_IDS_LOGGED],
                accounts=len({inc["account_id"] for inc, new in changes if new}),
            )

    async def set_status_detached(
        self, hit: Hit, known_version: int, *, wait_s: float = 10.0
    ) -> dict[str, Any] | None:
        """Apply a status hit to an incident that is no longer its group's current one
        (nothing but this changes it any more), through its stored copy: read, changed,
        written, then published. Written before it is published, so that the next change
        reads this version. The stored copy may trail the bus: it is read again until it
        has the last version the group published (``known_version``), for ``wait_s`` at
        most. Returns the changed incident, None if the change changed nothing."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            inc = await self.repo.load(hit["i"])
            if inc is not None and inc["version"] >= known_version:
                break
            if asyncio.get_running_loop().time() >= deadline:
                raise StatusChangeRefused(
                    "status change not applied: "
                    + (
                        "incident not found in the correlator's store"
                        if inc is None
                        else f"stored incident at version {inc['version']}, not {known_version}"
                    )
                )
            await asyncio.sleep(0.25)
        if inc["account_id"] != hit["a"]:
            raise StatusChangeRefused(
                "status change not applied: it names another account than its incident's"
            )
        if not set_status(inc, hit):
            return None
        await self.repo.upsert_many([inc])
        await self.publish_many([(inc, False)])
        return inc

    async def store_many(self, messages: list[incidents_pb2.Incident]) -> set[str]:
        """Store a batch of published incidents, each once in its newest version; returns
        the ids written (older or already stored versions write nothing).

        Each account that gained an incident (a version 1 in the batch) or whose incident
        was triaged is due for a live count (open incidents change); a replayed version 1
        only costs an extra count.
        """
        newest: dict[str, incidents_pb2.Incident] = {}
        opened: set[str] = set()
        for msg in messages:
            if msg.version == 1 or msg.HasField("status_changed_at"):
                opened.add(msg.account_id)
            have = newest.get(msg.incident_id)
            if have is None or have.version < msg.version:
                newest[msg.incident_id] = msg
        if not newest:
            return set()
        written = await self.repo.upsert_many([incident_from_message(m) for m in newest.values()])
        log.debug("incidents stored", received=len(messages), written=len(written))
        self._counts_due.update(opened)
        if not self.live_count_interval_s:
            await self.publish_due_counts()
        return written

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

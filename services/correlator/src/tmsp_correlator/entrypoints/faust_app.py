"""The faust-streaming application: agents, the window-state table, timers, the crontab.

Topology::

    DETECTIONS ──> match stage ──┐                 ┌─> INCIDENTS ──> store stage ─> Mongo
                   (stages.py)   ├─> <app>-hits ──>┤   correlate      (stages.py)  INCIDENT_COUNTS
    MITIGATION ──> mitigation ───┤   (repartition) └─> chained hits back to <app>-hits
                   agent         │      (keyed by group key; table: window state)
    INCIDENT_STATUS_CHANGES ─────┘ status hits (triage decisions from the portal)
    MITIGATION_RESULTS ─> NONCONFORMING_ENDPOINTS
    HEARTBEATS, UPLOADS, PRODUCTS ─> liveness ─> PRODUCT_LIVENESS (timer on the leader)
    LOG_MAINTENANCE ─> retention settings ─> purge of the store (and a timer on the leader)
    (timer on every worker) idle groups ─> tombstones on the window-state changelog

The match and store stages run on the shared consumer runner (stages.py), started with the
app; everything else here is a faust agent. Every agent catches its own errors: an
undecodable record, a late hit or a record whose handling keeps failing goes to the source
topic's dead-letter topic with the reason in headers, and the agent carries on with the next
record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any, cast
from zoneinfo import ZoneInfo

import faust
import orjson
from faust.serializers import codecs

from tmsp.events.v1 import (
    detections_pb2,
    incidents_pb2,
    maintenance_pb2,
    products_pb2,
    status_pb2,
)
from tmsp_common.kafka.envelope import EnvelopeError, epoch_seconds, unwrap
from tmsp_common.kafka.topics import (
    DAY_MS,
    DETECTIONS,
    HEARTBEATS,
    INCIDENT_STATUS_CHANGES,
    LOG_MAINTENANCE,
    MITIGATION_RESULTS,
    PRODUCTS,
    UPLOADS,
    Topic,
)
from tmsp_common.logging import get_logger
from tmsp_correlator.adapters.faust_bus import FaustBus
from tmsp_correlator.adapters.hit_records import (
    changelog_records,
    decode_hits,
    hit_partition,
    hit_records,
    state_of,
    state_value,
)
from tmsp_correlator.adapters.state_store import STORE_URL
from tmsp_correlator.bootstrap import Container
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import (
    GroupState,
    Hit,
    apply_batch,
    hits_for_event,
    idle_groups,
)
from tmsp_correlator.domain.nonconforming import MitigationFact
from tmsp_correlator.entrypoints.match_process import MatchProcesses
from tmsp_correlator.entrypoints.metrics import (
    EVENTS,
    GROUP_STATES,
    GROUPS_FORGOTTEN,
    HANDLE_SECONDS,
    HITS,
    INCIDENT_WRITES,
    LATE,
)
from tmsp_correlator.entrypoints.stages import (
    MatchStage,
    SharedProducer,
    StoreStage,
    hits_topic_name,
)
from tmsp_correlator.service_layer.events import mitigation_event, status_hit

log = get_logger(__name__)

HIT_SOURCE = Topic(
    "correlator.hits",
    None,
    key="group key",
    description="Internal: rule hits repartitioned by correlation group key",
)
HIT_DEAD_LETTERS = cast(Topic, HIT_SOURCE.dead_letter)  # HIT_SOURCE has a dead-letter topic
"""Created at start-up (under the prefix): hits the correlate stage could not handle."""
RETRIES = 3
HITS_RETENTION_MS = DAY_MS
"""The internal hits topic's retention (its records are consumed within seconds)."""
CHANGELOG_SEGMENT_MS = 3600 * 1000
"""A changelog segment closes after an hour at the latest, so a quiet one is compacted too."""
WINDOWS_TABLE = "correlation-windows"
STATE_CODEC = "tmsp-state"


class StateCodec(codecs.Codec):
    """Window states as faust's table reads and writes them (see :func:`state_value`)."""

    def _dumps(self, obj: Any) -> bytes:
        return state_value(obj)

    def _loads(self, s: bytes) -> Any:
        return state_of(s)


STATE = StateCodec()
codecs.register(STATE_CODEC, STATE)


@dataclasses.dataclass(frozen=True)
class Record:
    """Where a record (or one hit of a hits record) came from: what a dead letter names."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, event: Any) -> Record:
        m = event.message
        return cls(m.topic, m.partition, m.offset, m.key, m.value)

    def origin(self) -> dict[str, Any]:
        """Where a hit of this record's event says it came from (what a late hit's dead
        letter names)."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def with_hit(self, hit: Hit) -> Record:
        return dataclasses.replace(self, key=hit["k"].encode(), value=orjson.dumps(hit))

    def dead_letter_fields(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "partition": self.partition,
            "offset": self.offset,
        }


def detached_topic_name(settings: CorrelatorSettings) -> str:
    """Status changes of incidents their group has left behind, applied by their own agent
    (through the store, which may have to catch up) so the correlate agent never waits."""
    return f"{settings.app_id}-detached-status"


def changelog_topic_name(settings: CorrelatorSettings) -> str:
    """The window-state table's changelog (faust's name for it)."""
    return f"{settings.app_id}-{WINDOWS_TABLE}-changelog"


def internal_topics(settings: CorrelatorSettings) -> tuple[Topic, ...]:
    """The app's internal topics (hits, window-state changelog), created before it starts.

    faust declares them itself, but only after the first group assignment: on a fresh
    deployment the assignment then misses them and the correlate agent gets no partition
    until some later rebalance (seen in the kill test). Creating them first avoids that.
    """
    return (
        dataclasses.replace(
            HIT_SOURCE,
            name=hits_topic_name(settings),
            partitions=settings.partitions,
            has_dead_letter=False,
            # consumed within seconds by the same worker; a day outlasts any stall
            retention_ms=HITS_RETENTION_MS,
        ),
        Topic(
            detached_topic_name(settings),
            None,
            key="incident id",
            partitions=settings.partitions,
            description="Internal: status changes of left-behind incidents, by incident",
            has_dead_letter=False,
        ),
        Topic(
            changelog_topic_name(settings),
            None,
            key="group key",
            partitions=settings.partitions,
            compacted=True,
            description="Internal: changelog of the window-state table",
            has_dead_letter=False,
            # closed segments get compacted: what a restart reads stays near the live states
            extra_config={
                "segment.bytes": str(settings.changelog_segment_bytes),
                "segment.ms": str(CHANGELOG_SEGMENT_MS),
            },
        ),
    )


def make_app(settings: CorrelatorSettings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
        store=STORE_URL,  # faust's memory store, reading its own changelog (state_store.py)
        datadir=settings.data_path,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # without a linger every hit, changelog entry and incident is its own produce
        # request (acks=all): batching them is most of the worker's throughput
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=1 << 20,
        timezone=ZoneInfo(settings.time_zone),
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
    )


def wire(app: faust.App, bus: FaustBus, c: Container) -> None:
    """Declare the topics, table, agents, timers and crontab on ``app``."""
    s = c.settings
    prefix = s.topic_prefix

    mitigations_topic = bus.topic(MITIGATION_RESULTS.qualified(prefix))
    status_topic = bus.topic(INCIDENT_STATUS_CHANGES.qualified(prefix))
    heartbeats_topic = bus.topic(HEARTBEATS.qualified(prefix))
    uploads_topic = bus.topic(UPLOADS.qualified(prefix))
    products_topic = bus.topic(PRODUCTS.qualified(prefix))
    maintenance_topic = bus.topic(LOG_MAINTENANCE.qualified(prefix))
    hits_topic = bus.topic(hits_topic_name(s), s.partitions, internal=True)
    detached_name = detached_topic_name(s)
    detached_topic = bus.topic(detached_name, s.partitions, internal=True)
    windows = app.Table(WINDOWS_TABLE, default=None, partitions=s.partitions)
    # a Table takes its serializers from key_type/value_type (json unless a model says
    # otherwise), not from a schema; set before its changelog topic is first built
    windows.value_serializer = STATE_CODEC  # type: ignore[attr-defined]  # on Collection, not TableT

    async def guarded(source: Topic, rec: Record, handle: Callable[[], Awaitable[None]]) -> None:
        """Run ``handle`` (which may wait on Mongo): retried, then dead-lettered."""
        for attempt in range(1, RETRIES + 1):
            try:
                await handle()
                return
            except EnvelopeError as exc:
                await bus.dead_letter(source, reason=str(exc), **rec.dead_letter_fields())
                return
            except Exception as exc:  # noqa: BLE001 - the agent never dies on one record
                log.warning(
                    "record handling failed",
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if attempt < RETRIES:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                try:
                    await bus.dead_letter(
                        source,
                        reason=f"handler failed: {type(exc).__name__}: {exc}",
                        **rec.dead_letter_fields(),
                    )
                except Exception:  # noqa: BLE001
                    log.exception("dead-lettering failed", topic=rec.topic, offset=rec.offset)

    hits_name = hits_topic_name(s)

    async def send_hits(hits: list[Hit]) -> None:
        """Hits records (see :func:`hit_records`) straight to faust's producer, which faust
        flushes before committing offsets; records rather than a record per hit spare the
        per-record cost of producing and consuming (2-3 hits per event)."""
        for partition, key, value in hit_records(hits, s.partitions):
            await bus.send_raw(hits_name, key, value, partition)
        HITS.inc(len(hits))

    async def refuse(source: Topic, rec: Record, reason: str) -> None:
        """Dead-letter a record whose (pure, in-memory) handling failed: a retry would
        fail again."""
        log.warning("record refused", topic=rec.topic, offset=rec.offset, reason=reason)
        await bus.dead_letter(source, reason=reason, **rec.dead_letter_fields())

    # the match and store stages read outside faust's streams (see stages.py)
    # (faust starts an @app.service after table recovery, like the agents; an instance is
    # taken as it is, though the decorator is typed for classes)
    producer = SharedProducer(s)
    if s.match_processes:
        match_processes = MatchProcesses(s, beacon=app.beacon)
        app.service(cast(Any, match_processes))
        app.match_processes = match_processes  # type: ignore[attr-defined]  # spawned by the worker
    else:
        app.service(cast(Any, MatchStage(c, producer, beacon=app.beacon)))
    app.service(cast(Any, StoreStage(c, producer, beacon=app.beacon)))

    @app.agent(mitigations_topic, name="mitigation-results")
    async def mitigations(stream: Any) -> None:
        async for event in stream.events():
            record = Record.of(event)

            async def handle(event: Any = event, record: Record = record) -> None:
                env, res = unwrap(event.value, detections_pb2.MitigationResult)
                flat = mitigation_event(env, res)
                await c.nonconforming.apply(
                    MitigationFact(
                        account_id=flat["account_id"],
                        product_id=res.product_id,
                        endpoint=(res.endpoint.host, res.endpoint.ip, res.endpoint.mac),
                        threat_name=res.threat_name,
                        outcome=str(flat.get("outcome", "")),
                        ts=float(flat["ts"]),
                    )
                )
                await send_hits(hits_for_event(c.rules, flat, record.origin()))
                EVENTS.labels("mitigation_results").inc()

            await guarded(MITIGATION_RESULTS, record, handle)

    @app.agent(status_topic, name="incident-status")
    async def status_changes(stream: Any) -> None:
        # a triage decision joins its incident's group on the hits topic: the group's one
        # writer (the correlate agent) applies it, so a later match sees it
        async for event in stream.events():
            record = Record.of(event)

            async def handle(event: Any = event) -> None:
                env, change = unwrap(event.value, incidents_pb2.IncidentStatusChange)
                await send_hits([status_hit(env, change)])

            await guarded(INCIDENT_STATUS_CHANGES, record, handle)

    async def change_detached(record: Record, hit: Hit, known_version: int) -> None:
        """A status hit for an incident its group has left behind, through the stored copy:
        retried when the store fails, dead-lettered (on the status changes' dead-letter
        topic, the hit as the value) when it cannot apply."""

        async def handle() -> None:
            if await c.recorder.set_status_detached(
                hit, known_version, wait_s=s.status_store_wait_s
            ):
                INCIDENT_WRITES.labels("update").inc()

        await guarded(INCIDENT_STATUS_CHANGES, record.with_hit(hit), handle)

    correlate_seconds = HANDLE_SECONDS.labels("correlate")
    changelog = changelog_topic_name(s)

    state_lock = asyncio.Lock()
    """Held by a correlate batch from its first read of the table to its last write, and
    by the idle sweep: the table's two writers never interleave."""

    async def write_states(
        table: Any, states: dict[str, GroupState], forgotten: list[str] | None = None
    ) -> None:
        """The batch's changed window states (stamped :data:`SEEN`) into the table and its
        changelog, and tombstones of ``forgotten`` groups: one record batch per changelog
        partition, sent through faust's producer (flushed before the batch's hits are
        committed) rather than a ``table[key] = state`` (a send per key). A group's
        changelog partition is its hits partition, as faust's own write would pick (the
        partition of the record the hit came in); the records are what faust writes (key
        as JSON, value through the state codec, None to delete), so recovery reads them."""
        parts = changelog_records(states, forgotten or (), s.partitions, time.time())
        store = table.data  # the store itself: no changelog send of faust's
        for key, state in states.items():
            store[key] = state
        for key in forgotten or ():
            store.pop(key, None)
        for partition, records in parts.items():
            await bus.send_records(changelog, partition, records)

    async def correlate_batch(batch: list[Any]) -> None:
        """Apply a batch of hits records (:func:`apply_batch`, over the table's store, read
        as write_states writes it): window states to the table and its changelog, changed
        incidents to INCIDENTS, chained hits to the hits topic, decisions on incidents
        left behind to the detached-status topic; bad, late and refused hits dead-lettered
        with their reasons."""
        records = [Record.of(event) for event in batch]
        hits: list[tuple[int, Hit]] = []
        for index, record in enumerate(records):
            try:
                hits.extend((index, hit) for hit in decode_hits(record.value))
            except EnvelopeError as exc:
                await refuse(HIT_SOURCE, record, str(exc))
        done = apply_batch(c.rules, windows.data, hits, c.limits)
        for index, hit, reason in done.refused:
            await refuse(HIT_SOURCE, records[index].with_hit(hit), reason)
        for index, hit, reason in done.refused_status:
            await refuse(INCIDENT_STATUS_CHANGES, records[index].with_hit(hit), reason)
        for hit, reason in done.late:
            LATE.inc()
            o = hit.get("o") or {}
            await bus.dead_letter(
                _source_of(o.get("topic", ""), prefix),
                key=hit["k"].encode(),
                value=orjson.dumps(hit),
                reason=reason,
                partition=o.get("partition", ""),
                offset=o.get("offset", ""),
                extra_headers=[("tmsp-dlq-content-type", b"application/json; hit")],
            )
        await write_states(windows, done.states)
        await c.recorder.publish_many(list(done.changed.values()))
        if done.chained:
            await send_hits(done.chained)
        for _inc, opened in done.changed.values():
            INCIDENT_WRITES.labels("new" if opened else "update").inc()
        for _index, hit, known_version in done.detached:
            # on the broker before this batch is acknowledged (faust flushes first)
            await bus.send_raw(
                detached_name, hit["i"].encode(), orjson.dumps({"h": hit, "v": known_version})
            )

    @app.agent(hits_topic, name="correlate")
    async def correlate(stream: Any) -> None:
        # Records of hits are taken in batches; faust acknowledges a batch's records only
        # after the loop body returned and its producer was flushed, i.e. after the batch's
        # window states went to the table (changelog) and its incidents to INCIDENTS. A hot
        # group (an outbreak touches one group per threat) changes many times in a batch:
        # its state is written once, and each changed incident published once, newest
        # version. A hit that fails is dead-lettered alone; the rest of its record counts.
        # Applying a hit is pure and in memory: no per-hit coroutine, and nothing to retry.
        async for batch in stream.take_events(s.correlate_batch_max, within=s.correlate_batch_s):
            started = time.perf_counter()
            async with state_lock:
                await correlate_batch(batch)
            correlate_seconds.observe(time.perf_counter() - started)

    @app.agent(detached_topic, name="detached-status")
    async def detached_status(stream: Any) -> None:
        async for event in stream.events():
            record = Record.of(event)
            try:
                job = orjson.loads(event.value)
                hit, known_version = job["h"], int(job["v"])
                if not isinstance(hit, dict) or not {"i", "k", "a"} <= hit.keys():
                    raise ValueError("no incident, group or account")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                await refuse(
                    INCIDENT_STATUS_CHANGES, record, f"undecodable detached status change: {exc}"
                )
                continue
            await change_detached(record, hit, known_version)

    @app.agent(heartbeats_topic, name="heartbeats")
    async def heartbeats(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                env, hb = unwrap(event.value, status_pb2.Heartbeat)
                at = epoch_seconds(hb.received_at) or epoch_seconds(env.occurred_at)
                compliance = (
                    hb.security_compliance_enabled
                    if hb.HasField("security_compliance_enabled")
                    else None
                )
                await c.liveness.heartbeat(
                    hb.product_id,
                    hb.account_id or env.account_id,
                    at,
                    float(hb.expected_interval_seconds) or None,
                    compliance,
                )

            await guarded(HEARTBEATS, Record.of(event), handle)

    @app.agent(uploads_topic, name="uploads")
    async def uploads(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                env, up = unwrap(event.value, status_pb2.UploadReceived)
                at = epoch_seconds(up.finished_at) or epoch_seconds(env.occurred_at)
                await c.liveness.upload(up.product_id, up.account_id or env.account_id, at)

            await guarded(UPLOADS, Record.of(event), handle)

    @app.agent(products_topic, name="products")
    async def products(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                _env, p = unwrap(event.value, products_pb2.ProductSnapshot)
                await c.liveness.product(
                    p.product_id,
                    p.account_id,
                    float(p.heartbeat_interval_seconds),
                    float(p.upload_frequency_seconds),
                    p.state == products_pb2.PRODUCT_STATE_DEREGISTERED,
                )

            await guarded(PRODUCTS, Record.of(event), handle)

    @app.agent(maintenance_topic, name="log-maintenance")
    async def log_maintenance(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                _env, m = unwrap(event.value, maintenance_pb2.LogMaintenanceSettings)
                updated = m.updated_at.ToDatetime(UTC) if m.HasField("updated_at") else None
                try:
                    kept = await c.retention.heard(m.log_retention_days, updated)
                except ValueError as exc:
                    raise EnvelopeError(str(exc)) from None
                if kept:
                    await c.retention.purge(time.time())

            await guarded(LOG_MAINTENANCE, Record.of(event), handle)

    @app.timer(interval=s.group_sweep_interval_s)  # type: ignore[untyped-decorator]  # faust is untyped
    async def forget_idle_groups() -> None:
        # only between rebalances, and only this worker's partitions: a changelog still
        # being read (recovery) or a partition about to move must not get our tombstones
        if app.rebalancing or app.in_recovery:
            return
        mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
        try:
            async with state_lock:
                store = windows.data
                owned = [(k, v) for k, v in store.items() if hit_partition(k, s.partitions) in mine]
                idle, unstamped = idle_groups(owned, time.time(), s.group_idle_s)
                if idle or unstamped:
                    await write_states(windows, {k: store[k] for k in unstamped}, idle)
                GROUP_STATES.set(len(store))
        except Exception:  # noqa: BLE001 - the states stay; the next tick tries again
            log.exception("idle group sweep failed")
            return
        if idle:
            GROUPS_FORGOTTEN.inc(len(idle))
            log.info("idle correlation groups forgotten", groups=len(idle), kept=len(store))

    @app.timer(interval=s.purge_interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # faust is untyped
    async def purge() -> None:
        try:
            await c.retention.purge(time.time())
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("log maintenance failed")

    @app.timer(interval=s.liveness_check_interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # faust is untyped
    async def liveness_check() -> None:
        try:
            await c.liveness.check(time.time())
        except Exception:  # noqa: BLE001 - next tick tries again
            log.exception("liveness check failed")

    async def save_clean_rule_files() -> None:
        try:
            await c.save_clean_rule_files()
        except Exception:  # noqa: BLE001 - memory still has them; the next change saves
            log.exception("storing the clean rule file versions failed")

    @app.task  # type: ignore[untyped-decorator]  # faust is untyped
    async def store_loaded_rule_files() -> None:
        await save_clean_rule_files()

    if s.rules_reload_interval_s > 0:

        @app.timer(interval=s.rules_reload_interval_s)  # type: ignore[untyped-decorator]  # faust is untyped
        async def reload_rules() -> None:
            try:
                if c.reload_rules_if_changed():
                    log.info("rules reloaded; window state kept")
            except Exception:  # noqa: BLE001 - keep the running rules
                log.exception("rule reload failed; keeping the running rules")
            await save_clean_rule_files()

    if s.live_count_interval_s > 0:

        @app.timer(interval=s.live_count_interval_s)  # type: ignore[untyped-decorator]  # faust is untyped
        async def live_counts() -> None:
            # every worker: each counts the accounts whose incidents it stored
            try:
                await c.recorder.publish_due_counts()
            except Exception:  # noqa: BLE001 - still due: the next tick tries again
                log.exception("live incident counts failed")

    @app.crontab(s.daily_count_cron, timezone=ZoneInfo(s.time_zone), on_leader=True)
    async def daily_counts() -> None:
        try:
            await c.recorder.publish_daily_counts()
        except Exception:  # noqa: BLE001 - logged; tomorrow tries again
            log.exception("daily incident counts failed")

    app.correlator_agents = [  # type: ignore[attr-defined]
        mitigations,
        status_changes,
        correlate,
        heartbeats,
        uploads,
        products,
        log_maintenance,
        detached_status,
    ]


def _source_of(qualified: str, prefix: str) -> Topic:
    name = qualified[len(prefix) :] if prefix and qualified.startswith(prefix) else qualified
    return MITIGATION_RESULTS if name == MITIGATION_RESULTS.name else DETECTIONS

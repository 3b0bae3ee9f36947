"""The faust-streaming application: agents, the window-state table, timers, the crontab.

Topology::

    DETECTIONS ──┐                             ┌─> INCIDENTS (+ Mongo), INCIDENT_COUNTS
                 ├─ match rules ─> <app>-hits ─┤   (keyed by group key; table: window state)
    MITIGATION ──┘  (stateless)   (repartition)└─> chained hits back to <app>-hits
    MITIGATION_RESULTS ─> NONCONFORMING_ENDPOINTS
    HEARTBEATS, UPLOADS, PRODUCTS ─> liveness ─> PRODUCT_LIVENESS (timer on the leader)

Every agent catches its own errors: an undecodable record, a late hit or a record whose
handling keeps failing goes to the source topic's dead-letter topic with the reason in
headers, and the agent carries on with the next record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast
from zoneinfo import ZoneInfo

import faust
from faust.streams import _current_event as faust_current_event
from prometheus_client import Counter, Histogram

from tmsp.events.v1 import detections_pb2, products_pb2, status_pb2
from tmsp_common.kafka.envelope import EnvelopeError, unwrap
from tmsp_common.kafka.topics import (
    DETECTIONS,
    HEARTBEATS,
    MITIGATION_RESULTS,
    PRODUCTS,
    UPLOADS,
    Topic,
)
from tmsp_common.logging import get_logger
from tmsp_correlator.adapters.faust_bus import FaustBus
from tmsp_correlator.bootstrap import Container
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import GroupState, Hit, apply_hit, hits_for_event
from tmsp_correlator.domain.nonconforming import MitigationFact
from tmsp_correlator.service_layer.events import detection_event, mitigation_event

log = get_logger(__name__)

EVENTS = Counter("tmsp_correlator_events_total", "Events matched against the rules", ["topic"])
HITS = Counter("tmsp_correlator_hits_total", "Rule hits sent to the correlation stage")
INCIDENT_WRITES = Counter(
    "tmsp_correlator_incident_writes_total", "Incidents stored and published", ["kind"]
)
LATE = Counter("tmsp_correlator_late_hits_total", "Hits dead-lettered as too late")
HANDLE_SECONDS = Histogram("tmsp_correlator_handle_seconds", "Time to handle one record", ["stage"])

HIT_SOURCE = Topic(
    "correlator.hits",
    None,
    key="group key",
    description="Internal: rule hits repartitioned by correlation group key",
)
HIT_DEAD_LETTERS = cast(Topic, HIT_SOURCE.dead_letter)  # HIT_SOURCE has a dead-letter topic
"""Created at start-up (under the prefix): hits the correlate stage could not handle."""
RETRIES = 3
WINDOWS_TABLE = "correlation-windows"


def hits_topic_name(settings: CorrelatorSettings) -> str:
    return f"{settings.app_id}-hits"


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
        ),
        Topic(
            f"{settings.app_id}-{WINDOWS_TABLE}-changelog",
            None,
            key="group key",
            partitions=settings.partitions,
            compacted=True,
            description="Internal: changelog of the window-state table",
            has_dead_letter=False,
        ),
    )


def make_app(settings: CorrelatorSettings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap.split(',')[0]}",
        store="memory://",
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

    def forget_stored_versions(sender: Any, *args: Any, **kwargs: Any) -> None:
        # another worker now owns these incidents and may store newer versions
        c.recorder.repo.forget()

    # mode types receivers as a union of callables that no plain function matches
    app.on_partitions_revoked.connect(forget_stored_versions)  # type: ignore[arg-type]

    detections_topic = bus.topic(DETECTIONS.qualified(prefix))
    mitigations_topic = bus.topic(MITIGATION_RESULTS.qualified(prefix))
    heartbeats_topic = bus.topic(HEARTBEATS.qualified(prefix))
    uploads_topic = bus.topic(UPLOADS.qualified(prefix))
    products_topic = bus.topic(PRODUCTS.qualified(prefix))
    hits_topic = app.topic(
        hits_topic_name(s),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=s.partitions,
        internal=True,
    )
    windows = app.Table(
        WINDOWS_TABLE,
        default=None,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        partitions=s.partitions,
    )

    async def guarded(source: Topic, event: Any, handle: Callable[[], Awaitable[None]]) -> None:
        msg = event.message
        for attempt in range(1, RETRIES + 1):
            try:
                await handle()
                return
            except EnvelopeError as exc:
                await bus.dead_letter(
                    source,
                    key=msg.key,
                    value=msg.value,
                    reason=str(exc),
                    partition=msg.partition,
                    offset=msg.offset,
                )
                return
            except Exception as exc:  # noqa: BLE001 - the agent never dies on one record
                log.warning(
                    "record handling failed",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if attempt < RETRIES:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                try:
                    await bus.dead_letter(
                        source,
                        key=msg.key,
                        value=msg.value,
                        reason=f"handler failed: {type(exc).__name__}: {exc}",
                        partition=msg.partition,
                        offset=msg.offset,
                    )
                except Exception:  # noqa: BLE001
                    log.exception("dead-lettering failed", topic=msg.topic, offset=msg.offset)

    async def send_hits(hits: list[Hit]) -> None:
        for hit in hits:
            await hits_topic.send(key=hit["k"].encode(), value=json.dumps(hit).encode())
        HITS.inc(len(hits))

    def origin(event: Any) -> dict[str, Any]:
        m = event.message
        return {"topic": m.topic, "partition": m.partition, "offset": m.offset}

    @app.agent(detections_topic, name="detections")
    async def detections(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                started = time.perf_counter()
                env, det = unwrap(event.value, detections_pb2.Detection)
                await send_hits(hits_for_event(c.rules, detection_event(env, det), origin(event)))
                EVENTS.labels("detections").inc()
                HANDLE_SECONDS.labels("match").observe(time.perf_counter() - started)

            await guarded(DETECTIONS, event, handle)

    @app.agent(mitigations_topic, name="mitigation-results")
    async def mitigations(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
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
                await send_hits(hits_for_event(c.rules, flat, origin(event)))
                EVENTS.labels("mitigation_results").inc()

            await guarded(MITIGATION_RESULTS, event, handle)

    @app.agent(hits_topic, name="correlate")
    async def correlate(stream: Any) -> None:
        # Hits are taken in batches; faust acknowledges a batch's records only after the
        # loop body returned, i.e. after the batch's window states were written to the table
        # (changelog) and its incidents stored and published. A hot group (an outbreak
        # touches one group per threat) changes many times in a batch: its state is written
        # once, and each changed incident once, in its newest version.
        async for batch in stream.take_events(s.correlate_batch_max, within=s.correlate_batch_s):
            changed: dict[str, tuple[dict[str, Any], bool]] = {}
            states: dict[str, tuple[GroupState, Any]] = {}
            for event in batch:

                async def handle(
                    event: Any = event,
                    changed: dict[str, Any] = changed,
                    states: dict[str, Any] = states,
                ) -> None:
                    started = time.perf_counter()
                    try:
                        hit = json.loads(event.value)
                        key = hit["k"]
                    except (ValueError, KeyError, TypeError) as exc:
                        raise EnvelopeError(f"undecodable hit: {exc}") from exc
                    prior = states[key][0] if key in states else windows.get(key)
                    state, out = apply_hit(c.rules, prior, hit, c.limits)
                    if out.late_reason:
                        LATE.inc()
                        o = hit.get("o") or {}
                        await bus.dead_letter(
                            _source_of(o.get("topic", ""), prefix),
                            key=key.encode(),
                            value=event.value,
                            reason=out.late_reason,
                            partition=o.get("partition", ""),
                            offset=o.get("offset", ""),
                            extra_headers=[("tmsp-dlq-content-type", b"application/json; hit")],
                        )
                        return
                    if not out.duplicate:
                        states[key] = (state, event)
                    if out.incident is not None:
                        inc = out.incident
                        opened = out.new_incident or changed.get(inc["id"], (inc, False))[1]
                        changed[inc["id"]] = (inc, opened)
                    if out.chained:
                        await send_hits(out.chained)
                    HANDLE_SECONDS.labels("correlate").observe(time.perf_counter() - started)

                await guarded(HIT_SOURCE, event, handle)
            for key, (state, last_event) in states.items():
                # a table write finds its changelog partition through faust's current-event
                # context variable, which take_events() leaves unset; only this task's
                # context changes (the stream's own current_event stays faust's)
                token = faust_current_event.set(weakref.ref(last_event))
                try:
                    windows[key] = state
                finally:
                    faust_current_event.reset(token)
            await record_until_stored(list(changed.values()))
            for _inc, opened in changed.values():
                INCIDENT_WRITES.labels("new" if opened else "update").inc()

    async def record_until_stored(changes: list[tuple[dict[str, Any], bool]]) -> None:
        """Store and publish a batch's incidents; retried (never dropped) while Mongo is down."""
        delay = 0.2
        while True:
            try:
                await c.recorder.record_many(changes)
                return
            except Exception as exc:  # noqa: BLE001 - retried; the batch stays unacknowledged
                log.warning(
                    "storing incidents failed; retrying",
                    incidents=len(changes),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if app.should_stop:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    @app.agent(heartbeats_topic, name="heartbeats")
    async def heartbeats(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                env, hb = unwrap(event.value, status_pb2.Heartbeat)
                at = hb.received_at.seconds + hb.received_at.nanos / 1e9 or (
                    env.occurred_at.seconds + env.occurred_at.nanos / 1e9
                )
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

            await guarded(HEARTBEATS, event, handle)

    @app.agent(uploads_topic, name="uploads")
    async def uploads(stream: Any) -> None:
        async for event in stream.events():

            async def handle(event: Any = event) -> None:
                env, up = unwrap(event.value, status_pb2.UploadReceived)
                at = up.finished_at.seconds + up.finished_at.nanos / 1e9 or (
                    env.occurred_at.seconds + env.occurred_at.nanos / 1e9
                )
                await c.liveness.upload(up.product_id, up.account_id or env.account_id, at)

            await guarded(UPLOADS, event, handle)

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

            await guarded(PRODUCTS, event, handle)

    @app.timer(interval=s.liveness_check_interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # faust is untyped
    async def liveness_check() -> None:
        try:
            await c.liveness.check(time.time())
        except Exception:  # noqa: BLE001 - next tick tries again
            log.exception("liveness check failed")

    if s.rules_reload_interval_s > 0:

        @app.timer(interval=s.rules_reload_interval_s)  # type: ignore[untyped-decorator]  # faust is untyped
        async def reload_rules() -> None:
            try:
                if c.reload_rules_if_changed():
                    log.info("rules reloaded; window state kept")
            except Exception:  # noqa: BLE001 - keep the running rules
                log.exception("rule reload failed; keeping the running rules")

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
        detections,
        mitigations,
        correlate,
        heartbeats,
        uploads,
        products,
    ]


def _source_of(qualified: str, prefix: str) -> Topic:
    name = qualified[len(prefix) :] if prefix and qualified.startswith(prefix) else qualified
    return MITIGATION_RESULTS if name == MITIGATION_RESULTS.name else DETECTIONS

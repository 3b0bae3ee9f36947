"""The two stages that run outside faust's streams: match (detections -> hits) and store
(published incidents -> Mongo). Neither keeps window state; both run on the shared
consumer runner.

They run in the faust worker's process and event loop, but consume with the shared
:class:`~tmsp_common.kafka.consumer.ConsumerRunner` (aiokafka, batches from ``getmany``),
each in its own consumer group, rather than as faust agents: faust's stream costs about
130 us per record on the reference box (a faust agent that does nothing reads ~7.5k
records/s; aiokafka's ``getmany`` ~100k/s), which capped the worker below 8k detections/s
whatever the rules cost. The correlate stage stays a faust agent: it needs the
window-state table, and it reads hits batched (one record per hits partition per match
batch), so faust's per-record cost is paid once per batch there.

Match, per batch: every detection is flattened and matched (pure); the hits leave as one
record per hits partition (:func:`~tmsp_correlator.adapters.hit_records.hit_records`); the
batch is committed only once the broker acknowledged those records (``acks=all``). A crash
before the commit replays the batch: the correlate stage ignores a hit whose event its
window already counted. An undecodable detection, or one whose matching raised, is
dead-lettered with the reason and the rest of the batch goes on.

Store, per batch: the newest version of each incident is written under the version guard,
then the batch is committed; a replay rewrites nothing. Mongo down: the runner retries the
batch with backoff for as long as it takes (correlation carries on; nothing is dropped).
When the store group's partitions move, the versions this worker remembers having stored
are forgotten.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service

from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp_common.kafka.consumer import ConsumedEvent, ConsumerRunner, InvalidEvent
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import DETECTIONS, INCIDENTS, Topic
from tmsp_common.logging import get_logger
from tmsp_correlator.adapters.hit_records import hit_records
from tmsp_correlator.bootstrap import Container
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import Hit, hits_for_event
from tmsp_correlator.domain.rules import RuleSet
from tmsp_correlator.entrypoints.metrics import EVENTS, HANDLE_SECONDS, HITS, STORED
from tmsp_correlator.service_layer.events import detection_event

log = get_logger(__name__)

SERVICE = "correlator"
READY_TIMEOUT_S = 20.0
"""How long start-up waits for a stage's first partitions (more workers than partitions
leave some without)."""


def hits_topic_name(settings: CorrelatorSettings) -> str:
    """The internal topic of hits, partitioned by group key (read by the correlate agent)."""
    return f"{settings.app_id}-hits"


def match_group(settings: CorrelatorSettings) -> str:
    """The match stage's consumer group (faust's own group is the app id)."""
    return f"{settings.app_id}-match"


def store_group(settings: CorrelatorSettings) -> str:
    """The store stage's consumer group."""
    return f"{settings.app_id}-store"


def match_batch(
    rules: RuleSet, events: list[ConsumedEvent[detections_pb2.Detection]], prefix: str
) -> list[Hit]:
    """The hits of a batch of detections, each hit naming where its event came from. Pure:
    a detection whose matching raises is handed back as :class:`InvalidEvent` (the runner
    dead-letters it and calls again with the rest) before anything was sent."""
    started = time.perf_counter()
    hits: list[Hit] = []
    topic = DETECTIONS.qualified(prefix)
    for ev in events:
        origin = {"topic": topic, "partition": ev.partition, "offset": ev.offset}
        try:
            hits.extend(hits_for_event(rules, detection_event(ev.envelope, ev.payload), origin))
        except Exception as exc:  # noqa: BLE001 - one bad detection, not the batch
            raise InvalidEvent(ev, f"handler failed: {exc!r}") from exc
    HANDLE_SECONDS.labels("match").observe(time.perf_counter() - started)
    return hits


async def match_and_send(
    rules: RuleSet,
    producer: EventProducer,
    settings: CorrelatorSettings,
    events: list[ConsumedEvent[detections_pb2.Detection]],
) -> None:
    """Match a batch, send its hits records, return once the broker has them (then the
    runner commits): the match stage's handler, in the worker or a match process."""
    hits = match_batch(rules, events, settings.topic_prefix)
    futures = [
        await producer.send_raw(hits_topic_name(settings), value, key=key, partition=partition)
        for partition, key, value in hit_records(hits, settings.partitions)
    ]
    await asyncio.gather(*futures)
    EVENTS.labels("detections").inc(len(events))
    HITS.inc(len(hits))


def stage_producer(settings: CorrelatorSettings) -> EventProducer:
    """The producer of the consumer-runner stages (hits, dead letters): lingers, large
    batches."""
    return EventProducer(
        settings.kafka_bootstrap,
        service=SERVICE,
        topic_prefix=settings.topic_prefix,
        linger_ms=int(settings.producer_linger_s * 1000),
        max_batch_size=1 << 20,
    )


def stage_runner(
    settings: CorrelatorSettings,
    *,
    group: str,
    topic: Topic,
    handler: Callable[[list[ConsumedEvent[Any]]], Awaitable[None]],
    dead_letters: EventProducer,
    batch: tuple[int, float],
    on_revoked: Callable[[], None] | None = None,
    give_up_after: int = 10,
) -> ConsumerRunner:
    """A stage's consumer: ``batch`` is (records, seconds) of one batch; after
    ``give_up_after`` consecutive failures of a batch the runner stops (aiokafka binds the
    consumer to the running loop: build it there)."""
    records, seconds = batch
    return ConsumerRunner(
        bootstrap=settings.kafka_bootstrap,
        group_id=group,
        topics=[topic],
        handler=handler,
        dead_letters=dead_letters,
        topic_prefix=settings.topic_prefix,
        batch_size=records,
        batch_timeout_ms=max(1, int(seconds * 1000)),
        on_revoked=on_revoked,
        max_consecutive_failures=give_up_after,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(max(1.0, settings.session_timeout_s / 10) * 1000),
        max_partition_fetch_bytes=4 << 20,
    )


class SharedProducer:
    """The one producer of the worker's consumer-runner stages (the match stage's hits, both
    stages' dead letters): started by the first stage that starts, stopped by the last one
    that stops, so a stage finishing its last batch still has it. aiokafka binds a producer
    to the running loop: it is built at the first start."""

    def __init__(self, settings: CorrelatorSettings) -> None:
        self.settings = settings
        self._producer: EventProducer | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> EventProducer:
        async with self._lock:
            if self._producer is None:
                producer = stage_producer(self.settings)
                await producer.start()
                self._producer = producer
            self._users += 1
            return self._producer

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0 and self._producer is not None:
                await self._producer.stop()
                self._producer = None


class ConsumerStage(Service):
    """A consumer-runner stage, started and stopped with the faust app (``app.service``):
    start-up waits (bounded) for its first partitions, so "service ready" means it consumes;
    on stop it finishes the batch in hand, commits and closes; a fatal consumer error
    (``ConsumerStopped``) crashes the worker with one line naming the stage and reason."""

    name: str
    topic: Topic
    give_up_after: int = 10
    """Consecutive failures of a batch after which the stage (and so the worker) stops."""

    def __init__(self, container: Container, producer: SharedProducer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.container = container
        self.shared = producer
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.producer: EventProducer | None = None
        self.runner: ConsumerRunner | None = None

    def group(self) -> str:
        raise NotImplementedError

    def batch(self) -> tuple[int, float]:
        """(records, seconds) of one batch."""
        raise NotImplementedError

    def on_revoked(self) -> None:
        return None

    async def handle(self, events: list[ConsumedEvent[Any]]) -> None:
        raise NotImplementedError

    async def on_start(self) -> None:
        self.producer = await self.shared.acquire()
        self.runner = stage_runner(
            self.container.settings,
            group=self.group(),
            topic=self.topic,
            handler=self.handle,
            dead_letters=self.producer,
            batch=self.batch(),
            on_revoked=self.on_revoked,
            give_up_after=self.give_up_after,
        )
        self._task = asyncio.create_task(self._run(self.runner))
        try:
            await asyncio.wait_for(self.runner.ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                f"{self.name} stage has no partition yet",
                group=self.runner.group_id,
                waited_s=READY_TIMEOUT_S,
            )

    async def _run(self, runner: ConsumerRunner) -> None:
        try:
            await runner.run(self._stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line, then the worker stops
            log.error(f"{self.name} stage stopped", error=f"{type(exc).__name__}: {exc}")
            await self.crash(exc)

    async def on_stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 30)
            except TimeoutError:
                self._task.cancel()
            except Exception:  # noqa: BLE001, S110 - already logged by _run
                pass
        if self.producer is not None:
            self.producer = None
            await self.shared.release()


class MatchStage(ConsumerStage):
    """Detections in, hits records out (see the module docstring), in the worker's process
    (``MATCH_PROCESSES=0``; else see ``match_process.py``)."""

    name = "match"
    topic = DETECTIONS

    def group(self) -> str:
        return match_group(self.container.settings)

    def batch(self) -> tuple[int, float]:
        s = self.container.settings
        return s.match_batch_max, s.match_batch_s

    async def handle(self, events: list[ConsumedEvent[detections_pb2.Detection]]) -> None:
        assert self.producer is not None  # noqa: S101 - set in on_start
        await match_and_send(self.container.rules, self.producer, self.container.settings, events)


class StoreStage(ConsumerStage):
    """Published incidents in, their newest versions into Mongo (see the module docstring)."""

    name = "store"
    topic = INCIDENTS
    # Mongo down must delay the stored copy, never stop correlation: retried (backoff up to
    # 30 s) for as long as it takes; the batch stays uncommitted, so nothing is dropped
    give_up_after = sys.maxsize

    def group(self) -> str:
        return store_group(self.container.settings)

    def batch(self) -> tuple[int, float]:
        s = self.container.settings
        return s.store_batch_max, s.store_batch_s

    def on_revoked(self) -> None:
        # another worker now stores these incidents and may store newer versions
        self.container.recorder.repo.forget()

    async def handle(self, events: list[ConsumedEvent[incidents_pb2.Incident]]) -> None:
        started = time.perf_counter()
        written = await self.container.recorder.store_many([e.payload for e in events])
        STORED.inc(len(written))
        HANDLE_SECONDS.labels("store").observe(time.perf_counter() - started)

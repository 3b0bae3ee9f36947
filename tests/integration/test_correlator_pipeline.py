# ruff: noqa: E501  (long literal test data)
"""The correlator as deployed (faust worker subprocesses) against the real Kafka and Mongo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ProducerClosed
from pymongo import AsyncMongoClient

from tmsp.events.v1 import detections_pb2, incidents_pb2, maintenance_pb2, status_pb2
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import DLQ_REASON, DLQ_TOPIC
from tmsp_common.kafka.envelope import to_timestamp, unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import (
    DETECTIONS,
    HEARTBEATS,
    INCIDENT_COUNTS,
    INCIDENT_STATUS_CHANGES,
    INCIDENTS,
    LOG_MAINTENANCE,
    MITIGATION_RESULTS,
    NONCONFORMING_ENDPOINTS,
    PRODUCT_LIVENESS,
    UPLOADS,
    Topic,
)
from tmsp_common.testing import (
    REPO_ROOT,
    Infra,
    ServiceProcess,
    TopicReader,
    group_behind,
    process_tree,
    wait_until,
)
from tmsp_correlator.config import DEFAULT_RULES_DIR, CorrelatorSettings
from tmsp_correlator.domain.correlation import MemoryCorrelator
from tmsp_correlator.domain.rules import load_rule_directory
from tmsp_correlator.entrypoints.faust_app import HIT_DEAD_LETTERS, WINDOWS_TABLE
from tmsp_correlator.entrypoints.stages import SharedProducer
from tmsp_correlator.service_layer.events import detection_event
from tmsp_correlator.testing import detection, mitigation

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.slow]

RULES = Path(DEFAULT_RULES_DIR)
T0 = 1_790_000_000.0
SWEEPING = {"TMSP_CORRELATOR_GROUP_SWEEP_INTERVAL_S": "0.2"}
"""The idle sweep every 0.2 s (groups idle after the default 8 days: none forgotten)."""
BURST = "4f1a8d7e-1c52-4c1e-9a51-0b6a3c1d0201"
"""The pack's "several high-severity detections on one endpoint" (3 within 10 minutes)."""


class Correlators:
    def __init__(self, infra: Infra, names: Any, data_dir: Path) -> None:
        self.infra = infra
        self.names = names
        self.data_dir = data_dir
        self.db_name = names.database("corr")
        self.procs: list[ServiceProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.infra.env(),
            "TMSP_TOPIC_PREFIX": self.names.prefix,
            "TMSP_CORRELATOR_APP_ID": self.names.group("correlator"),
            "TMSP_CORRELATOR_MONGO_DATABASE": self.db_name,
            "TMSP_CORRELATOR_DATA_DIR": str(self.data_dir),
            "TMSP_CORRELATOR_PARTITIONS": "4",
            "TMSP_CORRELATOR_LIVENESS_CHECK_INTERVAL_S": "0.5",
            "TMSP_CORRELATOR_SESSION_TIMEOUT_S": "8",
            "TMSP_METRICS_PORT": "0",
            **extra,
        }

    def start(self, **extra: str) -> ServiceProcess:
        proc = ServiceProcess("tmsp_correlator", self.env(**extra)).start()
        self.procs.append(proc)
        proc.wait_for_log("service ready", timeout=90)
        return proc

    def stop_all(self) -> None:
        for n, p in enumerate(self.procs):
            if p.alive():
                p.terminate(timeout=20)
            # shown by pytest only when the test failed
            print(f"--- correlator {n} (last lines) ---\n{p.logs[-6000:]}")


@pytest.fixture
def correlators(infra: Infra, names: Any, tmp_path: Path) -> Iterator[Correlators]:
    c = Correlators(infra, names, tmp_path / "correlator-data")
    yield c
    c.stop_all()


@pytest.fixture
async def producer(infra: Infra, names: Any) -> Any:
    await ensure_topics(
        infra.kafka_bootstrap,
        [
            DETECTIONS,
            MITIGATION_RESULTS,
            HEARTBEATS,
            UPLOADS,
            INCIDENT_STATUS_CHANGES,
            LOG_MAINTENANCE,
        ],
        prefix=names.prefix,
    )
    p = EventProducer(infra.kafka_bootstrap, service="test", topic_prefix=names.prefix)
    await p.start()
    yield p
    await p.stop()


async def publish(producer: EventProducer, dets: list[detections_pb2.Detection]) -> None:
    futs = [
        await producer.send(
            DETECTIONS, d, key=d.product_id, account_id=d.account_id, event_id=d.event_id
        )
        for d in dets
    ]
    await asyncio.gather(*futs)


async def incidents_in_db(infra: Infra, db: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
    try:
        return [d async for d in client[db]["incidents"].find({})]
    finally:
        await client.close()


async def test_detections_become_a_stored_and_published_incident_and_bad_records_dead_letter(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    correlators.start()
    # garbage first: the agent must dead-letter it and carry on
    fut = await producer.send_raw(
        DETECTIONS.qualified(names.prefix), b"\x00not an envelope", key=b"tda1", headers=[]
    )
    await fut
    # and on the internal hits topic and on INCIDENTS (which the store stage consumes)
    hits_topic = f"{names.group('correlator')}-hits"
    for topic in (hits_topic, INCIDENTS.qualified(names.prefix)):
        await (await producer.send_raw(topic, b"\x00garbage", key=b"k", headers=[]))
    await publish(producer, [detection(f"e{i}", T0 + i * 30, host="pc7") for i in range(3)])
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 2, timeout=60)
    inc = next(
        unwrap(r.value, incidents_pb2.Incident)[1] for r in records if r.value != b"\x00garbage"
    )
    assert inc.title == "Several high-severity detections on one endpoint"
    assert sorted(inc.event_ids) == ["e0", "e1", "e2"]
    assert inc.event_count == 3
    assert [e.host for e in inc.endpoints] == ["pc7"]
    assert [t.event_id for t in inc.timeline] == ["e0", "e1", "e2"]
    assert inc.attack_tags and inc.recommended_actions
    assert inc.severity == detections_pb2.SEVERITY_HIGH
    docs = await wait_until(lambda: incidents_in_db(infra, correlators.db_name), timeout=20)
    assert [d["_id"] for d in docs] == [inc.incident_id]
    assert docs[0]["event_count"] == 3 and docs[0]["status"] == "new"
    # two hours older than the group's newest event: beyond the allowed lateness (1 h)
    await publish(producer, [detection("too-late", T0 - 7200, host="pc7")])
    async with TopicReader(infra.kafka_bootstrap, DETECTIONS.dead_letter, names.prefix) as dlq:  # type: ignore[arg-type]
        records = await dlq.read_until(
            lambda rs: any(b"late event" in dict(r.headers)[DLQ_REASON] for r in rs), timeout=30
        )
    reasons = [dict(r.headers)[DLQ_REASON] for r in records]
    assert b"not an envelope" in reasons[0]
    late = [r for r in records if b"late event" in dict(r.headers)[DLQ_REASON]]
    assert all(b"allowed lateness 3600s" in dict(r.headers)[DLQ_REASON] for r in late)
    assert all(json.loads(r.value)["e"] == "too-late" for r in late)
    assert all(
        dict(r.headers)[DLQ_TOPIC] == DETECTIONS.qualified(names.prefix).encode() for r in late
    )
    (stored,) = await incidents_in_db(infra, correlators.db_name)
    assert stored["event_count"] == 3  # the late event counted nowhere
    # window states in the changelog: compact JSON (orjson) without the derived indexes
    changelog = Topic(
        f"{names.group('correlator')}-correlation-windows-changelog", None, key="group key"
    )
    async with TopicReader(infra.kafka_bootstrap, changelog, "") as states:
        written = await states.read_until(lambda rs: len(rs) >= 1, timeout=30)
    assert all(
        b'"ids"' not in r.value and b'"n"' not in r.value and b'": ' not in r.value for r in written
    )
    assert any(json.loads(r.value).get("inc") for r in written)
    for dlq_topic, reason in (
        (HIT_DEAD_LETTERS, b"undecodable hits record"),
        (INCIDENTS.dead_letter, b"not an envelope"),
    ):
        async with TopicReader(infra.kafka_bootstrap, dlq_topic, names.prefix) as dlq:  # type: ignore[arg-type]
            (bad,) = await dlq.read_until(lambda rs: len(rs) >= 1, timeout=30)
        assert reason in dict(bad.headers)[DLQ_REASON] and bad.value == b"\x00garbage"
    async with TopicReader(infra.kafka_bootstrap, INCIDENT_COUNTS, names.prefix) as counts:
        (count,) = await counts.read_events(incidents_pb2.IncidentCount, 1, timeout=30)
    assert count.account_id == "acc1" and count.total_incidents == 1 and not count.daily


async def test_a_flood_of_undecodable_detections_stops_the_worker_with_one_clear_line(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    # the shared consumer convention: after 1,000 dead letters in a row the consumer stops
    # rather than dead-letter everything; the worker must then exit (not run on without
    # its match stage) with one line saying why, those 1,000 dead-lettered in order
    worker = correlators.start()
    topic = DETECTIONS.qualified(names.prefix)
    futs = [
        await producer.send_raw(topic, b"\x00garbage %d" % i, key=b"tda1", headers=[])
        for i in range(1001)
    ]
    await asyncio.gather(*futs)
    await wait_until(lambda: not worker.alive(), timeout=90)
    assert worker.proc is not None and worker.proc.returncode != 0
    stopped = [line for line in worker.logs.splitlines() if "match stage stopped" in line]
    assert len(stopped) == 1
    assert "1001 consecutive dead letters" in stopped[0]
    assert "not an envelope" in stopped[0]
    async with TopicReader(infra.kafka_bootstrap, DETECTIONS.dead_letter, names.prefix) as dlq:  # type: ignore[arg-type]
        records = await dlq.read_until(lambda rs: len(rs) >= 1000, timeout=30)
    assert [r.value for r in records] == [b"\x00garbage %d" % i for i in range(1000)]


async def test_two_workers_count_a_group_split_across_partitions(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    # the idle sweep ticks through the rebalance as the second worker joins (forgetting
    # nothing: the groups are not idle), beside the correlate batches it shares a lock with
    correlators.start(**SWEEPING)
    correlators.start(**SWEEPING)
    # one endpoint seen by three different appliances: three keys, so different partitions
    dets = [detection(f"s{i}", T0 + i, product_id=f"tda-{i}", host="shared") for i in range(3)]
    dets += [detection(f"q{i}", T0 + i, product_id=f"tda-{i}", host=f"quiet{i}") for i in range(3)]
    await publish(producer, dets)
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 1, timeout=60)
        await asyncio.sleep(3)
        await reader.read_until(lambda rs: True, timeout=1)
        incidents = [unwrap(r.value, incidents_pb2.Incident)[1] for r in reader.records]
    assert {i.incident_id for i in incidents} == {incidents[0].incident_id}
    assert sorted(incidents[-1].event_ids) == ["s0", "s1", "s2"]
    assert len(records) >= 1


async def test_worker_killed_and_restarted_loses_and_duplicates_no_incident(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    hosts = 200
    dets = host_bursts("k", hosts, products=5)
    expected = _expected_incidents(dets)
    assert len(expected) == hosts

    worker = correlators.start(**SWEEPING)
    await publish(producer, dets[: len(dets) // 2])
    # SIGKILL mid-stream, as soon as the first incidents are stored: offsets not yet
    # committed, window state partly in the changelog, incidents partly written
    await wait_until(lambda: incidents_in_db(infra, correlators.db_name), timeout=60, interval=0.05)
    worker.kill()
    stored_at_kill = len(await incidents_in_db(infra, correlators.db_name))
    await publish(producer, dets[len(dets) // 2 :])
    correlators.start(**SWEEPING)
    assert stored_at_kill < len(expected), "the kill should interrupt the run"
    await stored_counts_reach(infra, correlators.db_name, expected)


async def stored_counts_reach(infra: Infra, db: str, expected: dict[str, int]) -> None:
    """Wait until the store holds exactly ``expected`` (incident id -> event count); fail
    saying how many incidents are missing, extra or miscounted if it does not."""

    async def counts() -> dict[str, int]:
        return {d["_id"]: d["event_count"] for d in await incidents_in_db(infra, db)}

    async def settled() -> bool:
        return await counts() == expected

    try:
        await wait_until(settled, timeout=90, interval=1.0)
    except TimeoutError:
        got = await counts()
        missing = set(expected) - set(got)
        extra = set(got) - set(expected)
        wrong = {k for k in set(got) & set(expected) if got[k] != expected[k]}
        pytest.fail(f"missing={len(missing)} extra={len(extra)} wrong_counts={len(wrong)}")


def host_bursts(tag: str, hosts: int, *, products: int) -> list[detections_pb2.Detection]:
    """Three high-severity detections 20 s apart on each host, a threat of its own per host
    (so each group's events come from one product, one partition, in the order the
    reference sees them: a group across partitions may fire on another window first, and
    its incident then differs from the reference's)."""
    return [
        detection(
            f"{tag}{h}-{i}",
            T0 + h + i * 20,
            product_id=f"tda-{h % products}",
            host=f"{tag}host{h}",
            threat_name=f"{tag.upper()}{h}",
        )
        for h in range(hosts)
        for i in range(3)
    ]


def _expected_incidents(dets: list[detections_pb2.Detection]) -> dict[str, int]:
    """Incident id -> event count, as the reference (in-memory) correlator finds them."""
    from tmsp_common.kafka.envelope import wrap

    reference = MemoryCorrelator(load_rule_directory(RULES))
    for d in dets:
        env = wrap(d, producer="test", account_id=d.account_id, event_id=d.event_id)
        reference.process(detection_event(env, d))
    return {i["id"]: i["count"] for i in reference.incidents.values()}


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_match_processes_count_like_the_worker_a_killed_one_restarts_none_outlives_it(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    hosts = 60
    dets = host_bursts("m", hosts, products=6)
    expected = _expected_incidents(dets)
    assert len(expected) == hosts
    worker = correlators.start(TMSP_CORRELATOR_MATCH_PROCESSES="2")
    assert "match processes running" in worker.logs
    children = set(process_tree(worker.pid())) - {worker.pid()}
    assert len(children) == 2
    await publish(producer, dets[: len(dets) // 2])
    await wait_until(lambda: incidents_in_db(infra, correlators.db_name), timeout=60, interval=0.05)
    # a match process killed mid-stream: its worker starts another, its batch is replayed
    killed = min(children)
    os.kill(killed, signal.SIGKILL)
    await publish(producer, dets[len(dets) // 2 :])
    await stored_counts_reach(infra, correlators.db_name, expected)
    assert "match process exited" in worker.logs
    restarted = await wait_until(
        lambda: len(set(process_tree(worker.pid())) - {worker.pid(), killed}) == 2, timeout=30
    )
    assert restarted and worker.alive()
    # the worker killed: its match processes notice and stop by themselves
    now = set(process_tree(worker.pid())) - {worker.pid()}
    worker.kill()
    await wait_until(lambda: all(_gone(pid) for pid in now), timeout=15)


async def test_a_worker_stopped_with_sigterm_stops_its_match_processes_first(
    correlators: Correlators,
) -> None:
    worker = correlators.start(TMSP_CORRELATOR_MATCH_PROCESSES="1")
    (child,) = set(process_tree(worker.pid())) - {worker.pid()}
    assert worker.terminate(timeout=60) == 0
    assert _gone(child)
    assert "match process exited" not in worker.logs  # stopped, not restarted


async def test_failed_mitigation_makes_an_endpoint_nonconforming_until_cleaned(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    correlators.start()
    for i, outcome in enumerate(
        [detections_pb2.MITIGATION_OUTCOME_FAILED, detections_pb2.MITIGATION_OUTCOME_CLEANED]
    ):
        m = mitigation(f"m{i}", T0 + i * 60, outcome, host="pc9")
        await producer.publish(MITIGATION_RESULTS, m, key=m.product_id, account_id=m.account_id)
    async with TopicReader(infra.kafka_bootstrap, NONCONFORMING_ENDPOINTS, names.prefix) as r:
        first, second = await r.read_events(incidents_pb2.NonconformingEndpoint, 2, timeout=60)
    assert first.endpoint.host == "pc9" and not first.cleared
    assert first.reason == incidents_pb2.NONCONFORMING_REASON_MITIGATION_FAILED
    assert list(first.threat_names) == ["TROJ_TEST"]
    assert second.cleared
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as r:
        (inc,) = await r.read_events(incidents_pb2.Incident, 1, timeout=30)
    assert inc.title == "Threat Mitigator could not clean a threat"


async def test_product_goes_offline_when_heartbeats_stop_and_online_when_they_resume(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    correlators.start(TMSP_CORRELATOR_OFFLINE_MULTIPLE="2", TMSP_CORRELATOR_LOGS_TIMEOUT_S="3")

    async def beat() -> None:
        hb = status_pb2.Heartbeat(
            product_id="tda-live", account_id="acc1", expected_interval_seconds=1
        )
        hb.received_at.GetCurrentTime()
        await producer.publish(HEARTBEATS, hb, key="tda-live", account_id="acc1")

    async def upload() -> None:
        up = status_pb2.UploadReceived(product_id="tm-logs", account_id="acc1", file_name="x.log")
        up.finished_at.GetCurrentTime()
        await producer.publish(UPLOADS, up, key="tm-logs", account_id="acc1")

    def states(records: list[Any], product_id: str) -> list[int]:
        msgs = [unwrap(x.value, incidents_pb2.ProductLiveness)[1] for x in records]
        return [m.state for m in msgs if m.product_id == product_id]

    await beat()
    await upload()
    async with TopicReader(infra.kafka_bootstrap, PRODUCT_LIVENESS, names.prefix) as r:
        # online, then offline (no heartbeat for 2 x 1 s); logs not received after 3 s
        await r.read_until(
            lambda rs: len(states(rs, "tda-live")) >= 2 and states(rs, "tm-logs"), timeout=30
        )
        await beat()
        await upload()
        await r.read_until(
            lambda rs: len(states(rs, "tda-live")) >= 3 and len(states(rs, "tm-logs")) >= 2,
            timeout=30,
        )
        live, logs = states(r.records, "tda-live"), states(r.records, "tm-logs")
    S = incidents_pb2
    assert live[:3] == [
        S.PRODUCT_LIVENESS_STATE_ONLINE,
        S.PRODUCT_LIVENESS_STATE_OFFLINE,
        S.PRODUCT_LIVENESS_STATE_ONLINE,
    ]
    assert logs[:2] == [
        S.PRODUCT_LIVENESS_STATE_LOGS_NOT_RECEIVED,
        S.PRODUCT_LIVENESS_STATE_LOGS_RESUMED,
    ]


async def test_daily_incident_count_runs_on_the_crontab_in_the_configured_time_zone(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    # Kolkata is UTC+5:30: a crontab read in UTC would fire half an hour off this minute
    zone = ZoneInfo("Asia/Kolkata")
    fire = (datetime.now(zone) + timedelta(seconds=100)).replace(second=0, microsecond=0)
    correlators.start(
        TMSP_CORRELATOR_TIME_ZONE="Asia/Kolkata",
        TMSP_CORRELATOR_DAILY_COUNT_CRON=f"{fire.minute} {fire.hour} * * *",
    )
    await publish(producer, [detection(f"d{i}", T0 + i, host="pc3") for i in range(3)])

    def counts(records: list[Any]) -> list[incidents_pb2.IncidentCount]:
        return [unwrap(x.value, incidents_pb2.IncidentCount)[1] for x in records]

    async with TopicReader(infra.kafka_bootstrap, INCIDENT_COUNTS, names.prefix) as r:
        await r.read_until(lambda rs: any(c.daily for c in counts(rs)), timeout=150)
        live = [c for c in counts(r.records) if not c.daily]
        (daily,) = [c for c in counts(r.records) if c.daily]
    assert live and live[0].total_incidents == 1
    assert (daily.account_id, daily.open_incidents, daily.total_incidents) == ("acc1", 1, 1)
    ran_at = daily.as_of.ToDatetime(tzinfo=UTC).astimezone(zone)
    assert (ran_at.hour, ran_at.minute) == (fire.hour, fire.minute)


async def test_window_state_outlives_the_worker_through_the_table_changelog(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    """Two of the three high-severity detections a burst needs, a clean stop once their
    hits are committed (so nothing replays), a new worker, the third: the burst incident
    names all three, which it can only if the window state came back from the changelog
    the first worker wrote (in faust's record format, in record batches)."""
    app_id = names.group("correlator")
    hits_topic = f"{app_id}-hits"
    first = correlators.start()
    await publish(producer, [detection(f"w{i}", T0 + i, host="burst") for i in range(2)])
    ends_reader = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await ends_reader.start()
    await admin.start()
    try:

        async def hits_committed() -> bool:
            tps = [TopicPartition(hits_topic, p) for p in range(4)]
            ends = {tp.partition: o for tp, o in (await ends_reader.end_offsets(tps)).items()}
            return sum(ends.values()) > 0 and not await group_behind(
                admin, app_id, hits_topic, ends
            )

        await wait_until(hits_committed, timeout=60, interval=0.5)
    finally:
        await ends_reader.stop()
        await admin.close()
    changelog = Topic(f"{app_id}-{WINDOWS_TABLE}-changelog", None, key="group key")
    async with TopicReader(infra.kafka_bootstrap, changelog, "") as reader:

        def burst_state(records: list[Any]) -> dict[str, Any] | None:
            for r in reversed(records):
                if BURST in orjson.loads(r.key) and '["burst"]' in orjson.loads(r.key):
                    return dict(orjson.loads(r.value))
            return None

        await reader.read_until(lambda rs: burst_state(rs) is not None, timeout=30)
        state = burst_state(reader.records)
    assert state is not None and [e[2] for e in state["w"]] == ["w0", "w1"]
    assert state["inc"] is None
    assert first.terminate() == 0

    second = correlators.start()
    # the store read the changelog itself (faust resumes after it), and says so at INFO
    read = [
        json.loads(line)
        for line in second.logs.splitlines()
        if '"window states read from the changelog"' in line
    ]
    assert read and read[0]["records"] >= 2 and read[0]["groups"] >= 1
    await publish(producer, [detection("w2", T0 + 2, host="burst")])
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as incidents:
        await incidents.read_until(
            lambda rs: any(
                BURST in unwrap(r.value, incidents_pb2.Incident)[1].rule_ids for r in rs
            ),
            timeout=60,
        )
        burst = [
            inc
            for inc in (unwrap(r.value, incidents_pb2.Incident)[1] for r in incidents.records)
            if BURST in inc.rule_ids
        ]
    assert sorted(burst[-1].event_ids) == ["w0", "w1", "w2"]
    assert burst[-1].event_count == 3


async def test_an_idle_group_is_forgotten_in_memory_and_in_the_changelog(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    """Two of a burst's three detections, then no hit for longer than GROUP_IDLE_S: the
    group's state is forgotten. In memory: the next three open an incident of their own
    (kept, the first two would have opened it at the third and joined it). In the
    changelog: a tombstone after the state, which a new worker's recovery honours (three
    more open another incident rather than joining the one before)."""
    app_id = names.group("correlator")
    idle = {"TMSP_CORRELATOR_GROUP_IDLE_S": "4", "TMSP_CORRELATOR_GROUP_SWEEP_INTERVAL_S": "0.5"}
    changelog = Topic(f"{app_id}-{WINDOWS_TABLE}-changelog", None, key="group key")

    def burst_group(records: list[Any]) -> list[Any]:
        return [
            r
            for r in records
            if BURST in orjson.loads(r.key) and '["burst"]' in orjson.loads(r.key)
        ]

    async def tombstones(reader: TopicReader, n: int) -> None:
        def forgotten(records: list[Any]) -> bool:
            group = burst_group(records)
            return sum(r.value is None for r in group) >= n and group[-1].value is None

        await reader.read_until(forgotten, timeout=60)

    async def newest_burst(incidents: TopicReader, first_event: str) -> incidents_pb2.Incident:
        def bursts(records: list[Any]) -> list[incidents_pb2.Incident]:
            decoded = (unwrap(r.value, incidents_pb2.Incident)[1] for r in records)
            return [i for i in decoded if BURST in i.rule_ids and first_event in i.event_ids]

        await incidents.read_until(
            lambda rs: any(len(i.event_ids) >= 3 for i in bursts(rs)), timeout=60
        )
        return bursts(incidents.records)[-1]

    first = correlators.start(**idle)
    async with (
        TopicReader(infra.kafka_bootstrap, changelog, "") as states,
        TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as incidents,
    ):
        await publish(producer, [detection(f"w{i}", T0 + i, host="burst") for i in range(2)])
        await tombstones(states, 1)
        assert burst_group(states.records)[-2].value is not None  # the state, then its tombstone

        await publish(producer, [detection(f"w{i}", T0 + i, host="burst") for i in range(2, 5)])
        second = await newest_burst(incidents, "w2")
        assert sorted(second.event_ids) == ["w2", "w3", "w4"]

        await tombstones(states, 2)
        assert first.terminate() == 0
        correlators.start(**idle)
        await publish(producer, [detection(f"w{i}", T0 + i, host="burst") for i in range(5, 8)])
        third = await newest_burst(incidents, "w5")
    assert sorted(third.event_ids) == ["w5", "w6", "w7"]
    assert third.incident_id != second.incident_id


async def test_the_stages_share_one_producer_until_the_last_one_stops(
    infra: Infra, names: Any, producer: EventProducer
) -> None:
    """The match and store stages take one producer: the first start builds it, a stage
    that stops first leaves it working for the other, the last stop closes it, and a later
    start builds a new one."""
    settings = CorrelatorSettings(
        kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=names.prefix, data_dir="unused"
    )
    topic = DETECTIONS.qualified(names.prefix)
    shared = SharedProducer(settings)
    first, second = await shared.acquire(), await shared.acquire()
    assert first is second
    await shared.release()
    await (await first.send_raw(topic, b"still open", key=b"k"))
    await shared.release()
    with pytest.raises(ProducerClosed):
        await first.send_raw(topic, b"closed", key=b"k")
    again = await shared.acquire()
    assert again is not first
    await (await again.send_raw(topic, b"new", key=b"k"))
    await shared.release()


def status_change(
    inc: incidents_pb2.Incident, status: incidents_pb2.IncidentStatus.ValueType, change_id: str
) -> incidents_pb2.IncidentStatusChange:
    ch = incidents_pb2.IncidentStatusChange(
        change_id=change_id,
        incident_id=inc.incident_id,
        account_id=inc.account_id,
        group_key=inc.group_key,
        status=status,
        note=f"note of {change_id}",
        changed_by_user_id="analyst-1",
    )
    ch.requested_at.GetCurrentTime()
    return ch


async def test_triage_closes_an_incident_later_detections_open_the_next_and_bad_changes_dead_letter(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    """A resolved burst is not extended: the next three detections open a second incident.
    The first is then the group's past incident: a second decision on it changes its
    stored copy and publishes its next version. Changes that cannot apply dead-letter."""
    correlators.start(TMSP_CORRELATOR_STATUS_STORE_WAIT_S="1")

    async def send(ch: incidents_pb2.IncidentStatusChange) -> None:
        await (
            await producer.send(
                INCIDENT_STATUS_CHANGES,
                ch,
                key=ch.incident_id,
                account_id=ch.account_id,
                event_id=ch.change_id,
            )
        )

    async def bursts(reader: TopicReader, done: Any) -> list[incidents_pb2.Incident]:
        def decoded(rs: list[Any]) -> list[incidents_pb2.Incident]:
            incs = (unwrap(r.value, incidents_pb2.Incident)[1] for r in rs)
            return [i for i in incs if BURST in i.rule_ids]

        await reader.read_until(lambda rs: done(decoded(rs)), timeout=60)
        return decoded(reader.records)

    await publish(producer, [detection(f"t{i}", T0 + i * 30, host="pc3") for i in range(3)])
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as reader:
        (first,) = await bursts(reader, lambda bs: len(bs) >= 1)
        assert first.group_key.startswith("acc1|") and "pc3" in first.group_key
        await send(status_change(first, incidents_pb2.INCIDENT_STATUS_RESOLVED, "chg-1"))
        out = await bursts(reader, lambda bs: len(bs) >= 2)
        resolved = out[-1]
        assert resolved.incident_id == first.incident_id and resolved.version == 2
        assert resolved.status == incidents_pb2.INCIDENT_STATUS_RESOLVED
        assert (resolved.status_note, resolved.status_changed_by_user_id) == (
            "note of chg-1",
            "analyst-1",
        )
        assert resolved.HasField("status_changed_at") and resolved.event_count == 3
        # within the resolved incident's window: a new incident, not a fourth event of it
        await publish(producer, [detection(f"t{i}", T0 + i * 30, host="pc3") for i in range(3, 6)])
        out = await bursts(reader, lambda bs: len({b.incident_id for b in bs}) >= 2)
        second = out[-1]
        assert second.incident_id != first.incident_id
        assert sorted(second.event_ids) == ["t3", "t4", "t5"]
        assert second.status == incidents_pb2.INCIDENT_STATUS_NEW
        assert max(b.version for b in out if b.incident_id == first.incident_id) == 2
        # the first is the group's past incident now: changed through its stored copy
        await send(status_change(first, incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE, "chg-2"))
        out = await bursts(
            reader,
            lambda bs: any(b.incident_id == first.incident_id and b.version == 3 for b in bs),
        )
    (fp,) = [b for b in out if b.incident_id == first.incident_id and b.version == 3]
    assert fp.status == incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE
    assert fp.status_note == "note of chg-2" and fp.event_count == 3

    async def stored() -> dict[str, dict[str, Any]] | None:
        docs = {d["_id"]: d for d in await incidents_in_db(infra, correlators.db_name)}
        done = docs.get(first.incident_id, {}).get("version") == 3 and second.incident_id in docs
        return docs if done else None

    docs = await wait_until(stored, timeout=30)
    assert docs[first.incident_id]["status"] == "false_positive"
    assert docs[first.incident_id]["status_note"] == "note of chg-2"
    assert docs[second.incident_id]["status"] == "new"
    # the live count leaves the false positive out of the open incidents (the pack's
    # "repeated bursts" correlation made an incident of the two bursts as well)
    total = len(docs)
    async with TopicReader(infra.kafka_bootstrap, INCIDENT_COUNTS, names.prefix) as counts:
        await counts.read_until(
            lambda rs: any(
                (c.open_incidents, c.total_incidents) == (total - 1, total)
                for c in (unwrap(r.value, incidents_pb2.IncidentCount)[1] for r in rs)
            ),
            timeout=30,
        )

    # an incident nobody stored, and a change without the group key
    ghost = incidents_pb2.Incident(
        incident_id="no-such-incident", account_id="acc1", group_key=first.group_key
    )
    await send(status_change(ghost, incidents_pb2.INCIDENT_STATUS_RESOLVED, "chg-3"))
    keyless = incidents_pb2.Incident(incident_id=first.incident_id, account_id="acc1")
    await send(status_change(keyless, incidents_pb2.INCIDENT_STATUS_RESOLVED, "chg-4"))
    async with TopicReader(
        infra.kafka_bootstrap,
        INCIDENT_STATUS_CHANGES.dead_letter,  # type: ignore[arg-type]
        names.prefix,
    ) as dlq:
        records = await dlq.read_until(lambda rs: len(rs) >= 2, timeout=40)
    reasons = sorted(dict(r.headers)[DLQ_REASON].decode() for r in records)
    assert "not found in the correlator's store" in reasons[0]
    assert "without group_key" in reasons[1]


async def test_log_maintenance_from_the_portal_purges_old_incidents_and_bad_settings_dead_letter(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer
) -> None:
    correlators.start()
    now = datetime.now(UTC).timestamp()
    old_at, recent_at = now - 45 * 86_400, now - 86_400
    await publish(
        producer,
        [detection(f"old{i}", old_at + i * 30, host="pc-old") for i in range(3)]
        + [detection(f"new{i}", recent_at + i * 30, host="pc-new") for i in range(3)],
    )

    async def stored(n: int) -> list[dict[str, Any]] | None:
        docs = await incidents_in_db(infra, correlators.db_name)
        return docs if len(docs) == n else None

    docs = await wait_until(lambda: stored(2), timeout=60)
    assert {d["endpoints"][0]["host"] for d in docs} == {"pc-old", "pc-new"}

    def settings(days: int) -> maintenance_pb2.LogMaintenanceSettings:
        m = maintenance_pb2.LogMaintenanceSettings(
            report_retention_days=365, log_retention_days=days
        )
        m.updated_at.CopyFrom(to_timestamp(datetime.now(UTC)))
        return m

    # a record no portal could have written goes to the dead-letter topic with the reason
    await (await producer.send(LOG_MAINTENANCE, settings(0), key=LOG_MAINTENANCE.key))
    async with TopicReader(infra.kafka_bootstrap, LOG_MAINTENANCE.dead_letter, names.prefix) as dlq:  # type: ignore[arg-type]
        (bad,) = await dlq.read_until(lambda rs: len(rs) >= 1, timeout=30)
    assert b"log retention of 0 days" in dict(bad.headers)[DLQ_REASON]
    assert len(await incidents_in_db(infra, correlators.db_name)) == 2

    # the operator keeps logs 30 days: the 45-day-old incident goes, yesterday's stays
    await (await producer.send(LOG_MAINTENANCE, settings(30), key=LOG_MAINTENANCE.key))
    (kept,) = await wait_until(lambda: stored(1), timeout=30)
    assert kept["endpoints"][0]["host"] == "pc-new"


RULE_FILE = """title: High severity detection
name: high
logsource: {{category: detection}}
level: high
detection:
  s:
    severity: high
  condition: s
---
title: Burst {version}
name: burst
level: critical
correlation:
  type: event_count
  rules: [high]
  group-by: [Hostname]
  timespan: 10m
  condition: {{gte: 3}}
"""
BROKEN_RULE = """---
title: Typo
name: typo
logsource: {category: detection}
detection:
  s:
    severity: high
  condition: missing_selection
"""


async def test_a_worker_started_with_a_broken_rule_file_runs_its_last_clean_version(
    infra: Infra, names: Any, correlators: Correlators, producer: EventProducer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "burst.yml").write_text(RULE_FILE.format(version="v1"))
    first = correlators.start(TMSP_CORRELATOR_RULES_DIR=str(rules))

    async def stored_rule_files() -> list[dict[str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
        try:
            return [d async for d in client[correlators.db_name]["rule_files"].find({})]
        finally:
            await client.close()

    (stored,) = await wait_until(stored_rule_files, timeout=30)
    assert stored["_id"] == "burst.yml" and "Burst v1" in stored["text"]
    assert first.terminate(timeout=20) == 0
    # an edit with a typo, then a restart (a rescheduled pod): the file's last clean
    # version runs, not only the good rules of the broken one ("Burst v2")
    (rules / "burst.yml").write_text(RULE_FILE.format(version="v2") + BROKEN_RULE)
    second = correlators.start(TMSP_CORRELATOR_RULES_DIR=str(rules))
    assert "rule file refused; its last good version keeps running" in second.logs
    await publish(producer, [detection(f"r{i}", T0 + i * 30, host="pc-rules") for i in range(3)])
    async with TopicReader(infra.kafka_bootstrap, INCIDENTS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 1, timeout=60)
    titles = {unwrap(r.value, incidents_pb2.Incident)[1].title for r in records}
    assert "Burst v1" in titles and "Burst v2" not in titles
    # the stored clean version is still v1
    (kept,) = await stored_rule_files()
    assert "Burst v1" in kept["text"]


# --- the compiled build (mypyc, as the container image installs it) -------------------------


@pytest.fixture(scope="module")
def compiled_build() -> Path:
    """The correlator built as the container image builds it (hot path compiled by mypyc),
    installed in a directory of its own: first on PYTHONPATH, it is what runs."""
    built = subprocess.run(  # noqa: S603
        [sys.executable, str(REPO_ROOT / "scripts" / "compiled_correlator.py")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    return Path(built.stdout.strip())


def test_the_compiled_build_passes_the_correlators_own_tests(compiled_build: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(compiled_build)}
    which = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import tmsp_correlator as c; print(c.engine_build(), c.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert which.stdout.split() == [
        "compiled",
        str(compiled_build / "tmsp_correlator" / "__init__.py"),
    ]
    ran = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-m",
            "not integration",
            str(REPO_ROOT / "services" / "correlator" / "tests"),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = ran.stdout.strip().splitlines()[-1]
    assert ran.returncode == 0, ran.stdout[-6000:]
    # the few tests that patch the Python build from inside are the only ones skipped
    assert " passed" in summary and "failed" not in summary
    assert "3 skipped" in summary, summary


async def test_a_compiled_worker_finds_what_the_python_reference_finds_through_a_kill(
    infra: Infra,
    names: Any,
    correlators: Correlators,
    producer: EventProducer,
    compiled_build: Path,
) -> None:
    """The compiled worker (with match processes, then without) against the in-process
    Python reference on the same detections: bursts, and command-and-control callbacks
    followed by lateral movement; a SIGKILL mid-stream, the restarted worker recovering the
    window states the compiled one wrote. Exactly the reference's incidents and counts."""
    dets = host_bursts("x", 80, products=5)
    dets += [
        detection(
            f"seq{h}-{kind}",
            T0 + 5000 + h + offset,
            product_id=f"tda-{h % 5}",
            host=f"seqhost{h}",
            severity="medium",
            threat_name=f"SEQ{h}",
            category=kind,
        )
        for h in range(40)
        for kind, offset in (("c2", 0), ("lateral", 60))
    ]
    expected = _expected_incidents(dets)
    assert len(expected) == 80 + 40
    build = {"PYTHONPATH": str(compiled_build)}
    worker = correlators.start(TMSP_CORRELATOR_MATCH_PROCESSES="2", **build)
    assert '"engine": "compiled"' in worker.logs
    await publish(producer, dets[: len(dets) // 2])
    await wait_until(lambda: incidents_in_db(infra, correlators.db_name), timeout=60, interval=0.05)
    worker.kill()
    stored_at_kill = len(await incidents_in_db(infra, correlators.db_name))
    await publish(producer, dets[len(dets) // 2 :])
    restarted = correlators.start(**build)
    assert stored_at_kill < len(expected), "the kill should interrupt the run"
    assert '"engine": "compiled"' in restarted.logs
    await stored_counts_reach(infra, correlators.db_name, expected)

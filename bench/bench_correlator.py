# ruff: noqa: E501
"""Correlator benchmark: events/s through one worker with 100 rules, and publish->incident latency.

Measured side by side in the same run:

* ``engine``: the pure rule + correlation engine (both stages in one process, no Kafka)
  against decoding the same envelopes (``unwrap`` + flatten) - what matching costs; and
  the correlate stage's own work (decoding hits records, applying them, building the
  changelog records) timed in its parts (``correlate_stage``).
* ``kafka`` (needs the local stack): one correlator worker (a real ``python -m
  tmsp_correlator`` faust worker) is started, and once it is ready N detections are
  published (serialised beforehand, in whole record batches: well under a second for 150k;
  published before the worker was ready, they were partly matched before the clock
  started, rounds 1-11) and the worker consumes them; its rate is compared
  with a consumer that only reads and decodes the same topic, per wall second and per CPU
  second (the worker's own CPU time: on a small machine the broker, FerretDB and this
  script share its cores, so wall rates understate the worker). Then detections are
  published at a fixed rate (default 10k/s) and the latency from publishing the event
  that completes a burst to receiving the incident on INCIDENTS is measured (p50/p99).
* ``build``: by default (``--build both``) the engine figure and the worker run are
  measured for the plain Python build and for the compiled one (scripts/compiled_correlator.py,
  what the container image installs; the engine figure in a subprocess), with
  compiled/python ratios; ``--build python`` or ``compiled`` measures one. The publisher and
  the decode-only reference stay plain Python either way.
* ``restart`` (``--restart``): the workers stopped, a new one is timed from start to
  ``service ready`` (its table recovered from the changelog the run wrote), at once and
  again after ``--compaction-wait`` seconds, when the broker has compacted the closed
  changelog segments (``--changelog-segment-bytes``; a segment still open is not); the
  reference is the same changelog read by a plain consumer in this process, after the
  first restart.

    .venv/bin/python bench/bench_correlator.py                    # small, < 2 min
    .venv/bin/python bench/bench_correlator.py --events 200000 --rate 10000 --seconds 10
    .venv/bin/python bench/bench_correlator.py --engine-only
    .venv/bin/python bench/bench_correlator.py --events 150000 --match-processes 2 --build both

Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.envelope import unwrap, wrap
from tmsp_common.kafka.producer import EventProducer, send_in_batches
from tmsp_common.kafka.topics import DETECTIONS, INCIDENTS
from tmsp_common.testing import (
    REPO_ROOT,
    ServiceProcess,
    group_behind,
    kafka_reachable,
    leftovers_removed,
    local_infra,
    process_memory_mib,
    process_tree_cpu_seconds,
    unique,
)
from tmsp_correlator import engine_build
from tmsp_correlator.adapters.hit_records import (
    changelog_records,
    decode_hits,
    hit_records,
    state_of,
)
from tmsp_correlator.adapters.state_store import Record, read_partitions
from tmsp_correlator.config import DEFAULT_RULES_DIR, CorrelatorSettings
from tmsp_correlator.domain.correlation import (
    Limits,
    MemoryCorrelator,
    apply_batch,
    hits_for_event,
)
from tmsp_correlator.domain.rules import load_rule_directory
from tmsp_correlator.entrypoints.main import tune_gc
from tmsp_correlator.service_layer.events import detection_event
from tmsp_correlator.testing import detection

PACK = Path(DEFAULT_RULES_DIR)
T0 = 1_790_000_000.0
PARTITIONS = 6
BURST_TITLE = "Several high-severity detections on one endpoint"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def rule_dir(total: int) -> tuple[Path, int]:
    """The default pack plus generated rules, ``total`` rules in all."""
    root = Path(tempfile.mkdtemp(prefix="corr-bench-rules-"))
    shutil.copytree(PACK, root / "pack")
    base = load_rule_directory(root)
    have = len(base.detections) + len([c for c in base.correlations if not c.startswith("single:")])
    docs = []
    i = 0
    while have < total:
        kind = i % 4
        name = f"bench_rule_{i}"
        if kind == 0:
            det = f"  s:\n    ThreatName: BENCH_THREAT_{i}\n  condition: s"
        elif kind == 1:
            det = f"  s:\n    ThreatName|contains: bench{i}x\n    dst_port|gt: 1024\n  condition: s"
        elif kind == 2:
            det = f"  s:\n    Category: bench-cat-{i}\n  f:\n    severity: low\n  condition: s and not f"
        else:
            det = f"  s:\n    src_ip|cidr: 10.{i % 250}.0.0/16\n    Url|endswith: /bench{i}\n  condition: s"
        docs.append(
            f"title: Bench rule {i}\nname: {name}\nlogsource: {{product: tda, category: detection}}\n"
            f"level: medium\ntags: [attack.t1000]\ndetection:\n{det}\n"
        )
        have += 1
        if have < total and kind == 0:
            docs.append(
                f"title: Bench correlation {i}\nname: bench_corr_{i}\nlevel: high\n"
                f"correlation:\n  type: event_count\n  rules: [{name}]\n  group-by: [Hostname]\n"
                f"  timespan: 5m\n  condition: {{gte: 5}}\n"
            )
            have += 1
        i += 1
    (root / "bench.yml").write_text("---\n".join(docs))
    rs = load_rule_directory(root)
    assert not rs.rejected, rs.rejected
    return root, len(rs.detections) + len(
        [c for c in rs.correlations if not c.startswith("single:")]
    )


def workload(n: int, hosts: int, seed: int = 7) -> list[detections_pb2.Detection]:
    """Mostly quiet traffic; some hosts get high-severity bursts (3 within a minute)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        host = f"host{rnd.randrange(hosts)}"
        sev = rnd.choices(["low", "medium", "high"], [6, 3, 1])[0]
        out.append(
            detection(
                f"b{i}",
                T0 + i * 0.01,
                product_id=f"tda-{i % 12}",
                host=host,
                severity=sev,
                threat_name=rnd.choice(["ADW_X", "TROJ_Y", "BENCH_THREAT_8", "WORM_Z"]),
                category=rnd.choice(["adware", "trojan", "bench-cat-2", "policy"]),
                destination=detections_pb2.NetworkPeer(address="203.0.113.7", port=443),
                source=detections_pb2.NetworkPeer(address=f"10.{i % 200}.1.2", port=50000),
            )
        )
    return out


def bench_engine(rules_root: Path, payloads: list[bytes]) -> dict[str, Any]:
    rules = load_rule_directory(rules_root)
    t = time.perf_counter()
    flat = []
    for raw in payloads:
        env, det = unwrap(raw, detections_pb2.Detection)
        flat.append(detection_event(env, det))
    decode_s = time.perf_counter() - t
    mc = MemoryCorrelator(rules)
    t = time.perf_counter()
    for raw in payloads:
        env, det = unwrap(raw, detections_pb2.Detection)
        mc.process(detection_event(env, det))
    engine_s = time.perf_counter() - t
    n = len(payloads)
    return {
        "build": engine_build(),
        "events": n,
        "decode_only_events_per_s": round(n / decode_s),
        "engine_events_per_s": round(n / engine_s),
        "ratio_engine_to_decode": round(decode_s / engine_s, 3),
        "incidents": len(mc.incidents),
        "correlate_stage": bench_correlate_stage(rules_root, payloads),
    }


def bench_correlate_stage(rules_root: Path, payloads: list[bytes]) -> dict[str, Any]:
    """The correlate stage's own work, offline, timed in its three parts: decoding hits
    records, applying them (``apply_batch``) and building the window states' changelog
    records. The hits records are the match stage's (one match batch of
    ``MATCH_BATCH_MAX`` events, one record per hits partition), a correlate batch one match
    batch's records, with the worker's GC settings."""
    rules = load_rule_directory(rules_root)
    per_batch = CorrelatorSettings().match_batch_max
    batches: list[list[bytes]] = []
    for start in range(0, len(payloads), per_batch):
        hits = []
        for offset, raw in enumerate(payloads[start : start + per_batch], start):
            env, det = unwrap(raw, detections_pb2.Detection)
            origin = {"topic": "detections", "partition": 0, "offset": offset}
            hits.extend(hits_for_event(rules, detection_event(env, det), origin))
        batches.append([value for _p, _k, value in hit_records(hits, PARTITIONS)])
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        stored: dict[str, Any] = {}
        spent = {"decode": 0.0, "apply": 0.0, "records": 0.0}
        records = size = 0
        for values in batches:
            t0 = time.perf_counter()
            batch = [(i, hit) for i, value in enumerate(values) for hit in decode_hits(value)]
            t1 = time.perf_counter()
            done = apply_batch(rules, stored, batch, Limits())
            t2 = time.perf_counter()
            parts = changelog_records(done.states, (), PARTITIONS, now=time.time())
            spent["decode"] += t1 - t0
            spent["apply"] += t2 - t1
            spent["records"] += time.perf_counter() - t2
            stored.update(done.states)
            records += len(done.states)
            size += sum(len(v or b"") for part in parts.values() for _k, v in part)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    n = len(payloads)
    return {
        "events_per_s": round(n / sum(spent.values())),
        **{f"{part}_us_per_event": round(s / n * 1e6, 1) for part, s in spent.items()},
        "state_records": records,
        "state_bytes_per_event": round(size / n),
        "events_per_batch": per_batch,
    }


def hits_in(rules_root: Path, dets: list[detections_pb2.Detection]) -> int:
    """How many hits the match stage makes of ``dets`` (hits travel in batched records)."""
    rules = load_rule_directory(rules_root)
    n = 0
    for d in dets:
        env = wrap(d, producer="bench", account_id="acc1", event_id=d.event_id)
        n += len(hits_for_event(rules, detection_event(env, d)))
    return n


async def decode_only(
    bootstrap: str, topic: str, n: int, *, decode: bool = True
) -> tuple[float, float]:
    """Records per wall second and per CPU second of a plain aiokafka ``getmany`` consumer
    (in this process) that decodes and flattens each detection (``decode=False``: reads
    only; ``bench/faust_ceiling.py``)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=unique("bench-decode"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if started is None and batch:
                started, cpu0 = time.perf_counter(), time.process_time()
            for part in batch.values():
                if not decode:
                    seen += len(part)
                    continue
                for r in part:
                    env, det = unwrap(r.value, detections_pb2.Detection)
                    detection_event(env, det)
                    seen += 1
        assert started is not None
        return n / (time.perf_counter() - started), n / (time.process_time() - cpu0)
    finally:
        await consumer.stop()


class BulkPublisher:
    """Publishes prepared detections fast, so that publishing is not what a run times: each
    enveloped as the gateway does and keyed by product (serialised beforehand), sent in
    whole record batches per partition (the one the key's default partition gives), in
    order within each."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_batch_size=1 << 20
        )
        self.parts: dict[int, list[tuple[bytes, bytes]]] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def prepare(self, dets: list[detections_pb2.Detection]) -> None:
        partitions = sorted(await self.producer.partitions_for(self.topic))
        pick = DefaultPartitioner()
        for d in dets:
            key = d.product_id.encode()
            env = wrap(d, producer="bench", account_id="acc1", event_id=d.event_id)
            self.parts.setdefault(pick(key, partitions, partitions), []).append(
                (key, env.SerializeToString())
            )

    async def send(self) -> tuple[dict[int, int], float]:
        """Send what was prepared; returns the end offset of each partition (the topic was
        empty) and the seconds until the broker acknowledged all of it."""
        started = time.perf_counter()
        sent = [
            fut
            for partition, records in self.parts.items()
            for fut, _count in await send_in_batches(self.producer, self.topic, partition, records)
        ]
        await asyncio.gather(*sent)
        return {p: len(r) for p, r in self.parts.items()}, time.perf_counter() - started


def cpu_since(now: dict[int, float], before: dict[int, float]) -> float:
    """CPU seconds a worker's processes used since ``before`` (a process that was not
    there then counts from its start)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())


def compiled_build() -> str:
    """The directory of the compiled build (built if the sources changed since)."""
    built = subprocess.run(  # noqa: S603
        [sys.executable, str(REPO_ROOT / "scripts" / "compiled_correlator.py")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return built.stdout.strip()


def engine_of_build(args: argparse.Namespace, pythonpath: str) -> dict[str, Any]:
    """The engine figure of another build: this script in a subprocess, that build first on
    its path (the same rules and workload: both are generated from fixed seeds)."""
    ran = subprocess.run(  # noqa: S603
        [
            sys.executable,
            __file__,
            "--engine-only",
            "--build",
            "python",  # in that process the import path picks the build: measure it there
            "--rules",
            str(args.rules),
            "--engine-events",
            str(args.engine_events),
        ],
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    engine: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])["engine"]
    if engine["build"] != "compiled":
        raise RuntimeError(f"{pythonpath} did not give the compiled build: {engine['build']}")
    return engine


async def bench_kafka(
    args: argparse.Namespace, rules_root: Path, pythonpath: str | None = None
) -> dict[str, Any]:
    infra = local_infra(start=False)
    prefix = f"{unique('bench')}."
    app_id = f"{prefix}correlator"
    await ensure_topics(infra.kafka_bootstrap, [DETECTIONS, INCIDENTS], prefix=prefix)
    producer = EventProducer(
        infra.kafka_bootstrap, service="bench", topic_prefix=prefix, linger_ms=20
    )
    await producer.start()
    topic = DETECTIONS.qualified(prefix)
    dets = workload(args.events, hosts=args.events // 20 + 1)
    bulk = BulkPublisher(infra.kafka_bootstrap, topic)
    await bulk.start()
    await bulk.prepare(dets)

    env = {
        **infra.env(),
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_CORRELATOR_APP_ID": app_id,
        "TMSP_CORRELATOR_MONGO_DATABASE": prefix.strip(".") + "_corr",
        "TMSP_CORRELATOR_RULES_DIR": str(rules_root),
        "TMSP_CORRELATOR_DATA_DIR": str(rules_root / "data"),
        "TMSP_CORRELATOR_PARTITIONS": str(PARTITIONS),
        "TMSP_LOG_LEVEL": "INFO",  # as deployed; "service ready" is an info line
        "TMSP_CORRELATOR_MATCH_PROCESSES": str(args.match_processes),
        "TMSP_CORRELATOR_CHANGELOG_SEGMENT_BYTES": str(args.changelog_segment_bytes),
        **({"PYTHONPATH": pythonpath} if pythonpath else {}),
    }
    # ``--workers N``: N workers of one app share the partitions (each its own data dir);
    # the clock starts when the first is ready, so rebalancing as the others join counts
    workers = [
        ServiceProcess(
            "tmsp_correlator", {**env, "TMSP_CORRELATOR_DATA_DIR": str(rules_root / f"data{n}")}
        ).start()
        for n in range(args.workers)
    ]
    worker = workers[0]
    try:
        deadline = time.monotonic() + 120
        while "service ready" not in worker.logs:
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(worker.logs[-3000:])
            await asyncio.sleep(0.1)
        build = "compiled" if pythonpath else "python"
        assert f'"engine": "{build}"' in worker.logs, "the worker runs another build"
        # the match processes are up before the worker says it is ready
        assert all("match processes running" in w.logs for w in workers if args.match_processes)
        # the detections go out only now: a worker's match stage consumes before the worker
        # says it is ready, so detections published earlier were partly matched untimed
        rss_ready, _ = process_memory_mib(worker.pid())
        started = time.perf_counter()
        cpu0 = [process_tree_cpu_seconds(w.pid()) for w in workers]
        ends, publish_s = await bulk.send()
        # done = every detection committed by the match stage AND every hit it produced
        # committed by the correlate stage (its window states and incidents written)
        hits_topic = f"{app_id}-hits"
        ends_reader = AIOKafkaConsumer(
            bootstrap_servers=infra.kafka_bootstrap, group_id=None, enable_auto_commit=False
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)

        async def ends_of(name: str, partitions: int) -> dict[int, int]:
            tps = [TopicPartition(name, p) for p in range(partitions)]
            return {tp.partition: o for tp, o in (await ends_reader.end_offsets(tps)).items()}

        await ends_reader.start()
        await admin.start()
        try:
            behind = args.events
            while True:
                behind = await group_behind(admin, f"{app_id}-match", topic, ends)
                if not behind:
                    hit_ends = await ends_of(hits_topic, PARTITIONS)
                    behind = await group_behind(admin, app_id, hits_topic, hit_ends)
                    if not behind:
                        break
                if time.perf_counter() - started > args.timeout:
                    raise RuntimeError(
                        f"worker did not finish in time: {behind} records not committed"
                        f"\n{worker.logs[-2000:]}"
                    )
                await asyncio.sleep(0.25)
            drained_s = time.perf_counter() - started
            worker_rate = args.events / drained_s
            cpu1 = [process_tree_cpu_seconds(w.pid()) for w in workers]
            worker_cpu = sum(cpu_since(c1, c) for c1, c in zip(cpu1, cpu0, strict=True))
            # the workers' own processes (correlate and store stages; with match processes
            # the match stage is elsewhere): what bounds a worker given cores to match on
            own_cpu = sum(
                c1.get(w.pid(), 0.0) - c.get(w.pid(), 0.0)
                for w, c1, c in zip(workers, cpu1, cpu0, strict=True)
            )
            hit_records = sum(hit_ends.values())
            rss_drained, rss_peak = process_memory_mib(worker.pid())
            # and the store stage: every published incident written to Mongo (committed)
            incidents_topic = INCIDENTS.qualified(prefix)
            while True:
                inc_ends = await ends_of(incidents_topic, INCIDENTS.partitions)
                if not await group_behind(admin, f"{app_id}-store", incidents_topic, inc_ends):
                    break
                if time.perf_counter() - started > args.timeout:
                    raise RuntimeError("the store stage did not finish in time")
                await asyncio.sleep(0.25)
            stored_rate = args.events / (time.perf_counter() - started)
        finally:
            await admin.close()
            with contextlib.suppress(asyncio.CancelledError):
                await ends_reader.stop()
        decode_rate, decode_cpu_rate = await decode_only(infra.kafka_bootstrap, topic, args.events)

        # first at a rate the worker sustains, then at the target rate
        paced = await latency_run(
            args.paced_rate, args.paced_seconds, args, infra.kafka_bootstrap, producer, prefix, "p"
        )
        latencies = await latency_run(
            args.rate, args.seconds, args, infra.kafka_bootstrap, producer, prefix, "l"
        )
        restart = await restart_run(args, env, rules_root, workers) if args.restart else None
    finally:
        for w in workers:
            w.terminate(timeout=30)
        await bulk.stop()
        await producer.stop()
    return {
        "events": args.events,
        "rules": args.rules,
        "build": build,
        "decode_only_events_per_s": round(decode_rate),
        "workers": args.workers,
        "match_processes_per_worker": args.match_processes,
        "worker_events_per_s": round(worker_rate),
        "hits_per_event": round(hits_in(rules_root, dets) / args.events, 2),
        "hit_records": hit_records,
        "incident_versions_published": sum(inc_ends.values()),
        "ratio_worker_to_decode": round(worker_rate / decode_rate, 3),
        "decode_only_events_per_cpu_s": round(decode_cpu_rate),
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_utilisation": round(worker_cpu / drained_s / args.workers, 2),
        "worker_events_per_cpu_s": round(args.events / worker_cpu),
        "publish_s": round(publish_s, 2),
        "worker_process_cpu_s": round(own_cpu, 2),
        "worker_process_events_per_cpu_s": round(args.events / own_cpu),
        "worker_process_rss_mib": {
            "ready": round(rss_ready),
            "drained": round(rss_drained),
            "peak": round(rss_peak),
        },
        "worker_process_rss_note": "resident memory of the (first) worker's own process when ready, after the drain (its window states added) and at its peak",
        "worker_process_note": "the worker process alone (correlate and store stages; the match stage too without match processes): the rate one worker reaches when its match processes have cores of their own",
        "ratio_worker_to_decode_per_cpu_s": round(args.events / worker_cpu / decode_cpu_rate, 3),
        "cpu_note": "worker CPU = utime+stime of the worker processes while draining; utilisation = cores used per worker",
        "worker_rate_note": "from the worker ready (the detections published then, in whole record batches: publish_s) until both stages drained (detections and hits committed); includes up to ~1s commit interval",
        "stored_events_per_s": round(stored_rate),
        "stored_rate_note": "until the store stage had also written every published incident to Mongo",
        "paced": paced,
        "at_target_rate": latencies,
        **({"restart": restart} if restart else {}),
    }


async def restart_run(
    args: argparse.Namespace, env: dict[str, str], rules_root: Path, workers: list[ServiceProcess]
) -> dict[str, Any]:
    """Stop the workers; time a new worker to ``service ready`` at once and after the wait."""
    for w in workers:
        w.terminate(timeout=30)

    async def ready_after_start() -> tuple[float, float | None]:
        started = time.perf_counter()
        # faust's recovery says when it starts and stops reading the changelog
        w = ServiceProcess(
            "tmsp_correlator", {**env, "TMSP_CORRELATOR_DATA_DIR": str(rules_root / "restart")}
        ).start()
        try:
            while "service ready" not in w.logs:
                if not w.alive() or time.perf_counter() - started > args.timeout:
                    raise RuntimeError(w.logs[-3000:])
                await asyncio.sleep(0.05)
            return time.perf_counter() - started, recovery_seconds(w.logs)
        finally:
            w.terminate(timeout=30)

    at_once, recovery_at_once = await ready_after_start()
    plain_records, plain_s = await plain_read(
        env["TMSP_KAFKA_BOOTSTRAP"],
        f"{env['TMSP_CORRELATOR_APP_ID']}-correlation-windows-changelog",
    )
    await asyncio.sleep(args.compaction_wait)
    compacted, recovery_compacted = await ready_after_start()
    return {
        "changelog_segment_bytes": args.changelog_segment_bytes,
        "changelog_records_at_once": plain_records,
        "plain_read_s_at_once": round(plain_s, 2),
        "ratio_recovery_to_plain_read_at_once": (
            round(recovery_at_once / plain_s, 1) if recovery_at_once and plain_s else None
        ),
        "plain_read_note": "the same changelog read start to end by a plain aiokafka consumer in this process (the store's read_partitions, each value decoded with orjson, nothing applied), right after the first restart",
        "ready_s_at_once": round(at_once, 2),
        "recovery_s_at_once": recovery_at_once,
        "ready_s_after_compaction_wait": round(compacted, 2),
        "recovery_s_after_compaction_wait": recovery_compacted,
        "compaction_wait_s": args.compaction_wait,
        "note": "ready: start to 'service ready' (imports, group join, recovery) of a new worker; recovery: the store's reading of the changelog plus faust's recovery of the rest",
    }


async def plain_read(bootstrap: str, topic: str) -> tuple[int, float]:
    """Records of ``topic`` and the seconds a plain consumer (the one the table's store
    reads with, :func:`read_partitions`) takes to read them all, each value decoded as the
    state codec does, without applying them: the reference for a restart's recovery."""
    read = 0

    def take(records: list[Record]) -> None:
        nonlocal read
        for _key, value in records:
            if value is not None:
                state_of(value)
        read += len(records)

    started = time.perf_counter()
    await read_partitions(bootstrap, {TopicPartition(topic, p): 0 for p in range(PARTITIONS)}, take)
    return read, time.perf_counter() - started


def recovery_seconds(logs: str) -> float | None:
    """Seconds the window-state table took to come back: the store's own reading of the
    changelog ('window states read from the changelog', its ``seconds``) plus faust's
    recovery of what is left (from its first 'Restoring state from changelog topics' to its
    last 'Done reading from changelog topics'); None if neither is in the log."""
    own = [
        float(json.loads(line)["seconds"])
        for line in logs.splitlines()
        if '"window states read from the changelog"' in line
    ]
    fausts = _faust_recovery_seconds(logs)
    if not own and fausts is None:
        return None
    return round(sum(own) + (fausts or 0.0), 2)


def _faust_recovery_seconds(logs: str) -> float | None:
    marks: dict[str, list[float]] = {"start": [], "done": []}
    for line in logs.splitlines():
        kind = (
            "start"
            if "Restoring state from changelog" in line
            else "done"
            if "Done reading from changelog" in line
            else None
        )
        if kind is None:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            at = json.loads(line)["timestamp"]
            marks[kind].append(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
    if not marks["start"] or not marks["done"]:
        return None
    return round(max(marks["done"]) - min(marks["start"]), 2)


async def latency_run(
    rate: int,
    seconds: float,
    args: argparse.Namespace,
    bootstrap: str,
    producer: EventProducer,
    prefix: str,
    tag: str,
) -> dict[str, Any]:
    """Publish at ``rate`` for ``seconds``; every 50th event starts a 3-event burst."""
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}
    reader = AIOKafkaConsumer(
        INCIDENTS.qualified(prefix),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    await reader.start()
    await reader.getmany(timeout_ms=500)
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batch = await reader.getmany(timeout_ms=200)
            now = time.perf_counter()
            for part in batch.values():
                for r in part:
                    _, inc = unwrap(r.value, incidents_pb2.Incident)
                    # only the bursts of this run (not incidents still coming from the
                    # throughput run, nor the outbreak rule that all LAT_T events feed)
                    if inc.incident_id in received or inc.title != BURST_TITLE:
                        continue
                    sent = [sent_at[e] for e in inc.event_ids if e in sent_at]
                    if len(sent) == len(inc.event_ids) == 3:
                        # from publishing the event that completed the burst
                        received[inc.incident_id] = now - max(sent)

    task = asyncio.create_task(consume())
    total = int(rate * seconds)
    base = T0 + (10_000_000 if tag == "l" else 5_000_000)
    batch = max(1, rate // 100)
    t_start = time.perf_counter()
    futs = []
    for i in range(total):
        burst = i % 50 < 3
        host = f"{tag}-lat-host-{i // 50}" if burst else f"{tag}-quiet-{i % 997}"
        d = detection(
            f"{tag}{i}",
            base + i / rate,
            product_id=f"tda-{i % 12}",
            host=host,
            severity="high" if burst else "low",
            threat_name="LAT_T",
        )
        sent_at[d.event_id] = time.perf_counter()
        futs.append(
            await producer.send(
                DETECTIONS, d, key=d.product_id, account_id="acc-lat", event_id=d.event_id
            )
        )
        if i % batch == batch - 1:
            target = t_start + (i + 1) / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    await asyncio.gather(*futs)
    achieved = total / (time.perf_counter() - t_start)
    expected = (total + 49) // 50
    deadline = time.monotonic() + args.timeout
    while len(received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await task
    await reader.stop()
    lat_ms = [v * 1000 for v in received.values()]
    return {
        "latency_target_rate_per_s": rate,
        "latency_achieved_publish_rate_per_s": round(achieved),
        "latency_incidents_expected": expected,
        "latency_incidents_received": len(received),
        "latency_p50_ms": round(pct(lat_ms, 50), 1),
        "latency_p99_ms": round(pct(lat_ms, 99), 1),
        "latency_max_ms": round(max(lat_ms), 1) if lat_ms else None,
        "latency_mean_ms": round(statistics.fmean(lat_ms), 1) if lat_ms else None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rules_root, rule_count = rule_dir(args.rules)
    args.rules = rule_count
    dets = workload(args.engine_events, hosts=args.engine_events // 20 + 1)
    payloads = [
        wrap(d, producer="bench", account_id="acc1", event_id=d.event_id).SerializeToString()
        for d in dets
    ]
    builds = ["python", "compiled"] if args.build == "both" else [args.build]
    compiled = compiled_build() if "compiled" in builds else None
    result: dict[str, Any] = {"rules": rule_count}
    for build in builds:
        suffix = "" if build == "python" else "_compiled"
        result[f"engine{suffix}"] = (
            engine_of_build(args, compiled)
            if build == "compiled" and compiled
            else bench_engine(rules_root, payloads)
        )
    if not args.engine_only:
        infra = local_infra(start=False) if kafka_reachable("127.0.0.1:19092") else None
        for build in builds:
            suffix = "" if build == "python" else "_compiled"
            if infra is None:
                result[f"kafka{suffix}"] = "skipped: local Kafka not reachable"
                continue
            path = compiled if build == "compiled" else None
            result[f"kafka{suffix}"] = await bench_kafka(args, rules_root, path)
    if len(builds) == 2:
        result["compiled_to_python"] = build_ratios(result)
    shutil.rmtree(rules_root, ignore_errors=True)
    return result


def build_ratios(result: dict[str, Any]) -> dict[str, float]:
    """The compiled build's figures as ratios to the Python build's of the same run."""
    pairs = [("engine", "engine_events_per_s")]
    if isinstance(result.get("kafka"), dict) and isinstance(result.get("kafka_compiled"), dict):
        pairs += [
            ("kafka", "worker_events_per_s"),
            ("kafka", "worker_events_per_cpu_s"),
            ("kafka", "stored_events_per_s"),
        ]
    return {
        f"{section}.{figure}": round(
            result[f"{section}_compiled"][figure] / result[section][figure], 2
        )
        for section, figure in pairs
    }


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rules", type=int, default=100)
    p.add_argument("--engine-events", type=int, default=50_000)
    p.add_argument(
        "--events", type=int, default=20_000, help="events for the worker throughput run"
    )
    p.add_argument("--rate", type=int, default=10_000, help="events/s for the latency run")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of the latency run")
    p.add_argument("--paced-rate", type=int, default=200, help="events/s of the paced run")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument(
        "--match-processes",
        type=int,
        default=0,
        help="TMSP_CORRELATOR_MATCH_PROCESSES of each worker (0: the match stage in its process)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="correlator workers sharing the partitions (the rate is then theirs together)",
    )
    p.add_argument("--engine-only", action="store_true")
    p.add_argument(
        "--build",
        choices=("python", "compiled", "both"),
        default="both",
        help="the correlator build measured (compiled: mypyc, as the container image has it)",
    )
    p.add_argument("--restart", action="store_true", help="also time a worker's restart")
    p.add_argument(
        "--changelog-segment-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="TMSP_CORRELATOR_CHANGELOG_SEGMENT_BYTES (the window-state changelog's segments)",
    )
    p.add_argument(
        "--compaction-wait",
        type=float,
        default=90.0,
        help="seconds between the two restarts (the broker compacts after 60 s + its backoff)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    with leftovers_removed():
        out = asyncio.run(main(parse(sys.argv[1:])))
        print(json.dumps(out))

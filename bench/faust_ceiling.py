"""How fast faust-streaming can read records at all, against aiokafka's ``getmany``.

Why the correlator's match and store stages run on the shared consumer runner rather than
as faust agents (docs/services/correlator.md, round 5): a faust agent whose body does
nothing but take batches is the ceiling of any faust stage that reads a record per event.
N raw records are pre-published to a fresh 6-partition topic, then read (1) by aiokafka's
``getmany`` and (2) by a faust worker (a subprocess, as deployed) whose agent only counts
``stream.take_events(1000, within=0.02)`` batches.

    .venv/bin/python bench/faust_ceiling.py                 # 40,000 records, ~30 s
    .venv/bin/python bench/faust_ceiling.py --records 100000

Needs the local stack (``make infra-up``). Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bench_correlator import decode_only  # this directory: the same reference reader

from tmsp_common.testing import leftovers_removed, local_infra, unique

VALUE = b"x" * 300  # about a detection envelope's size


async def publish(bootstrap: str, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futs = [await producer.send(topic, VALUE, key=str(i % 12).encode()) for i in range(n)]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def faust_worker(bootstrap: str, topic: str, n: int) -> None:
    """The subprocess: a faust app whose one agent only counts batches; prints its rate."""
    import faust

    app = faust.App(
        f"{topic}-faust",  # named after the topic, so its leftovers go with it
        broker=f"kafka://{bootstrap}",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-ceiling-"),
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    state: dict[str, Any] = {"seen": 0, "started": None}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.02):
            if state["started"] is None:
                state["started"] = time.perf_counter()
            state["seen"] += len(batch)
            if state["seen"] >= n:
                rate = n / (time.perf_counter() - state["started"])
                os.write(1, f"FAUST_RATE {rate:.0f}\n".encode())  # faust redirects sys.stdout
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def read_with_faust(bootstrap: str, topic: str, n: int, timeout: float) -> float:
    out = subprocess.run(  # noqa: S603 - this very script, as a faust worker
        [sys.executable, __file__, "--as-faust-worker", topic, "--records", str(n)],
        env={**os.environ, "TMSP_KAFKA_BOOTSTRAP": bootstrap},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("FAUST_RATE "):
            return float(line.split()[1])
    raise RuntimeError(f"the faust worker printed no rate:\n{(out.stdout + out.stderr)[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=40_000)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--as-faust-worker", metavar="TOPIC", help=argparse.SUPPRESS)
    args = p.parse_args()
    bootstrap = local_infra(start=False).kafka_bootstrap
    if args.as_faust_worker:
        faust_worker(bootstrap, args.as_faust_worker, args.records)
        return
    topic = unique("bench-ceiling")
    print(f"publishing {args.records} records to {topic} ...", file=sys.stderr)
    asyncio.run(publish(bootstrap, topic, args.records))
    print("reading with aiokafka getmany ...", file=sys.stderr)
    getmany, _per_cpu_s = asyncio.run(decode_only(bootstrap, topic, args.records, decode=False))
    print("reading with a faust agent that only counts ...", file=sys.stderr)
    faust_rate = read_with_faust(bootstrap, topic, args.records, args.timeout)
    print(
        json.dumps(
            {
                "records": args.records,
                "aiokafka_getmany_records_per_s": round(getmany),
                "faust_agent_records_per_s": round(faust_rate),
                "ratio_faust_to_getmany": round(faust_rate / getmany, 3),
            }
        )
    )


if __name__ == "__main__":
    with leftovers_removed():
        main()

"""Notifier benchmark: emails per second into a local SMTP sink, and the latency from a
notification request published on Kafka to the mail accepted by the SMTP server.

Side by side in the same run, the reference: the same number of mails (same templates,
same size) sent straight to the same sink with aiosmtplib over the same number of
connections, no Kafka and no delivery log. The ratio says what the guarantees cost (the
delivery log write before and after each mail, the consumer, the bus).

    .venv/bin/python bench/bench_notifier.py               # 300 mails (burst), 100 paced
    .venv/bin/python bench/bench_notifier.py --mails 2000 --paced 500 --rate 100

Prints one JSON object as the last line. Needs the local stack (Kafka, FerretDB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tmsp.events.v1 import notifications_pb2
from tmsp_common.clock import SystemClock
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS
from tmsp_common.testing import (
    ServiceProcess,
    free_port,
    leftovers_removed,
    local_infra,
    unique,
)
from tmsp_notifier.adapters.smtp import SmtpConfig, SmtpSender
from tmsp_notifier.domain.model import Kind
from tmsp_notifier.service_layer.compose import compose
from tmsp_notifier.service_layer.rendering import Renderer
from tmsp_notifier.testing import RecordingSmtpServer, notifier_env


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def request(nid: str) -> notifications_pb2.NotificationRequest:
    return notifications_pb2.NotificationRequest(
        notification_id=nid,
        kind=notifications_pb2.NOTIFICATION_KIND_EMERGENCY_CODE,
        account_id="bench",
        recipients=["user@bench.example"],
        params={"code": "123456", "user_name": "Bench"},
    )


async def reference(smtp: RecordingSmtpServer, n: int, connections: int) -> float:
    """Mails per second straight into the sink (render + compose + aiosmtplib)."""
    renderer = Renderer()
    sender = SmtpSender(SmtpConfig(port=smtp.port, connections=connections))
    slots = asyncio.Semaphore(connections)
    clock = SystemClock()

    async def one(i: int) -> None:
        async with slots:
            email = renderer.render(Kind.EMERGENCY_CODE, {"code": "123456", "user_name": "B"})
            msg = compose(
                notification_id=f"ref-{i}",
                sender="TMSP <n@bench.example>",
                recipients=("user@bench.example",),
                email=email,
                now=clock.now(),
            )
            await sender.send(msg)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await sender.close()
    return n / elapsed


async def run_notifier(
    smtp: RecordingSmtpServer,
    producer: EventProducer,
    ids: list[str],
    rate: float | None,
    timeout: float,
) -> tuple[float, list[float]]:
    """Publish requests (all at once, or paced at ``rate``/s); returns (mails/s, latencies)."""
    published: dict[str, float] = {}
    wanted = {f"<{i}@tmsp.notifier>": i for i in ids}
    before = len(smtp.received)
    started = time.monotonic()
    futures = []
    for k, nid in enumerate(ids):
        if rate:
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        published[nid] = time.monotonic()
        fut = await producer.send(NOTIFICATION_REQUESTS, request(nid), key=nid, account_id="bench")
        if rate:
            await fut
        else:
            futures.append(fut)
    await asyncio.gather(*futures)
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in smtp.received[before:] if str(r.message["Message-ID"]) in wanted]
        if len({str(r.message["Message-ID"]) for r in got}) >= len(ids):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(got)} of {len(ids)} mails arrived")
        await asyncio.sleep(0.05)
    first_accept: dict[str, float] = {}
    for r in got:
        first_accept.setdefault(wanted[str(r.message["Message-ID"])], r.accepted_at)
    latencies = [first_accept[n] - published[n] for n in ids]
    span = max(first_accept.values()) - started
    return len(ids) / span, latencies


async def main(args: argparse.Namespace) -> dict[str, Any]:
    infra = local_infra(start=True)
    prefix = f"{unique('bench')}."
    with RecordingSmtpServer(free_port()) as smtp, tempfile.TemporaryDirectory() as tmp:
        ref_rate = await reference(smtp, args.mails, args.connections)
        env = notifier_env(
            infra_env=infra.env(),
            prefix=prefix,
            database=prefix.rstrip(".") + "_notifier",
            smtp_port=smtp.port,
            grpc_port=free_port(),
            tls_dir=str(Path(tmp) / "tls"),
            smtp_connections=str(args.connections),
            delivery_concurrency=str(args.connections * 2),
        )
        proc = ServiceProcess("tmsp_notifier", env).start()
        try:
            proc.wait_for_log("service ready", timeout=90)
            async with EventProducer(
                infra.kafka_bootstrap, service="bench", topic_prefix=prefix
            ) as producer:
                await run_notifier(smtp, producer, ["warm-0", "warm-1"], None, 60)
                burst_ids = [f"b-{i}" for i in range(args.mails)]
                burst_rate, burst_lat = await run_notifier(
                    smtp, producer, burst_ids, None, args.timeout
                )
                paced_ids = [f"p-{i}" for i in range(args.paced)]
                _, paced_lat = await run_notifier(
                    smtp, producer, paced_ids, args.rate, args.timeout
                )
        finally:
            proc.terminate()
    return {
        "benchmark": "notifier",
        "mails_burst": args.mails,
        "notifier_mails_per_s": round(burst_rate, 1),
        "reference_direct_smtp_mails_per_s": round(ref_rate, 1),
        "ratio_to_reference": round(burst_rate / ref_rate, 3),
        "burst_latency_p50_ms": round(statistics.median(burst_lat) * 1000, 1),
        "burst_latency_p99_ms": round(pct(burst_lat, 0.99) * 1000, 1),
        "paced_mails": args.paced,
        "paced_rate_per_s": args.rate,
        "paced_latency_p50_ms": round(statistics.median(paced_lat) * 1000, 1),
        "paced_latency_p99_ms": round(pct(paced_lat, 0.99) * 1000, 1),
        "smtp_connections": args.connections,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--mails", type=int, default=300, help="mails in the throughput burst")
    p.add_argument("--paced", type=int, default=60, help="mails in the latency run")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second when paced")
    p.add_argument("--connections", type=int, default=4, help="SMTP connections")
    p.add_argument("--timeout", type=float, default=120.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    with leftovers_removed():
        result = asyncio.run(main(parse(sys.argv[1:])))
        print(json.dumps(result))

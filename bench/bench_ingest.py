"""Ingest gateway throughput: a CEF file over SFTP and over HTTPS, end to end (file in,
every event acknowledged by Kafka), side by side with Kafka's own producer performance test
at the same record size (the broker's limit on this machine).

    .venv/bin/python bench/bench_ingest.py                 # 100k records
    .venv/bin/python bench/bench_ingest.py --records 1000000
    .venv/bin/python bench/bench_ingest.py --parse-workers 0

Prints one JSON object (last line): events/s per protocol, the producer-perf-test rate and
the ratios. Uses the local stack (deploy/local/infra.py up) with a unique topic prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tmsp_common.kafka import topics
from tmsp_common.testing import REPO_ROOT, leftovers_removed, local_infra, unique
from tmsp_ingest.adapters.encoding import encode_chunk
from tmsp_ingest.domain.intake import UploadContext
from tmsp_ingest.harness import Gateway


def cef_file(records: int, salt: str) -> bytes:
    """Records as a Threat Discovery Appliance writes them (~230 bytes each)."""
    lines = [
        (
            f"CEF:0|Trend Micro|Deep Discovery Inspector|5.8|{2000 + i % 500}|"
            f"TROJ_GEN.R{i % 977:03d} callback to C&C server|{i % 11}|"
            f"rt={1795168800000 + i * 10} src=10.{i % 200}.{i % 250}.{i % 254 + 1} "
            f"spt={1024 + i % 60000} dst=203.0.113.{i % 254 + 1} dpt=443 "
            f"shost=ws-{i % 5000}.corp.example suser=user{i % 900} act=blocked "
            f"cat=Malware cs1Label=Policy cs1=default policy {salt}"
        )
        for i in range(records)
    ]
    return ("\n".join(lines) + "\n").encode()


def envelope_size(data: bytes) -> int:
    """Average serialized envelope size of these records (the producer-perf record size)."""
    sample = data.split(b"\n")[:1000]
    ctx = UploadContext("prd-bench", "acct-bench", 1, "bench.cef", time.time(), 2026)
    chunk = encode_chunk(sample, 1, ctx, "trace", "ingest")
    return round(sum(len(v) for v in chunk.detections) / max(1, len(chunk.detections)))


async def sftp_upload(gw: Gateway, user: str, password: str, data: bytes) -> float:
    return await gw.sftp_put(user, "bench.cef", data, password=password, block_size=256 * 1024)


async def https_upload(gw: Gateway, user: str, password: str, data: bytes) -> float:
    context = ssl.create_default_context(cafile=str(gw.ca))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=1800),
    ) as session:
        started = time.perf_counter()
        async with session.post(
            f"https://127.0.0.1:{gw.ports['https']}/v1/uploads?file=bench.cef",
            data=data,
            headers={"Authorization": aiohttp.encode_basic_auth(user, password)},
        ) as resp:
            body = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"HTTPS upload: {resp.status} {body}")
        return time.perf_counter() - started


async def producer_perf(bootstrap: str, prefix: str, records: int, size: int) -> dict[str, Any]:
    """Kafka's own ProducerPerformance, acks=all + idempotence like the gateway's producer,
    to a topic with the detections topic's partition count."""
    topic = f"{prefix}bench.producer-perf"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=topics.DETECTIONS.partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO_ROOT / "deploy" / "local" / "infra.py"),
        "kafka-cli",
        "producer-perf-test",
        "--topic", topic,
        "--num-records", str(records),
        "--record-size", str(size),
        "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
        "enable.idempotence=true", "linger.ms=10",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    text = out.decode()
    matches = re.findall(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", text)
    match = matches[-1] if matches else None  # the last line is the summary
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"producer-perf-test failed: {err.decode()[-2000:]}")
    return {"records_per_s": float(match[1]), "mb_per_s": float(match[2])}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    infra = local_infra(start=True)
    prefix = f"{unique('bench')}."
    data_sftp = cef_file(args.records, "sftp")
    data_https = cef_file(args.records, "https")
    size = envelope_size(data_sftp)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        gw = Gateway(
            infra.kafka_bootstrap,
            infra.mongo_url,
            prefix,
            prefix.strip(".").replace(".", "_") + "_ingest",
            Path(tmp),
            extra_env={
                "TMSP_INGEST_PARSE_WORKERS": str(args.parse_workers),
                "TMSP_INGEST_MAX_UPLOAD_BYTES": str(max(len(data_sftp) * 2, 1 << 20)),
                "TMSP_INGEST_ACK_TIMEOUT_SECONDS": "1800",
            },
        )
        gw.start(timeout=120)
        try:
            await gw.publish_account("acct-bench", "owner@bench.example")
            reg = await gw.register("acct-bench", "owner@bench.example")
            user, password = reg.credentials.user_name, reg.credentials.password
            sftp_s = await sftp_upload(gw, user, password, data_sftp)
            https_s = await https_upload(gw, user, password, data_https)
        finally:
            gw.stop()
    perf = await producer_perf(infra.kafka_bootstrap, prefix, args.records, size)
    sftp_rate = args.records / sftp_s
    https_rate = args.records / https_s
    return {
        "records": args.records,
        "file_bytes": len(data_sftp),
        "record_bytes_on_bus": size,
        "parse_workers": args.parse_workers,
        "sftp_events_per_s": round(sftp_rate),
        "https_events_per_s": round(https_rate),
        "kafka_producer_perf_records_per_s": round(perf["records_per_s"]),
        "kafka_producer_perf_mb_per_s": perf["mb_per_s"],
        "ratio_sftp_to_kafka": round(sftp_rate / perf["records_per_s"], 3),
        "ratio_https_to_kafka": round(https_rate / perf["records_per_s"], 3),
        "target_events_per_s": 100_000,
    }


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--million", action="store_true", help="1,000,000 records")
    p.add_argument("--parse-workers", type=int, default=1)
    args = p.parse_args(argv)
    if args.million:
        args.records = 1_000_000
    return args


if __name__ == "__main__":
    with leftovers_removed():
        print(json.dumps(asyncio.run(main(parse(sys.argv[1:])))))

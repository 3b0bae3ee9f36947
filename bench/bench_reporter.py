"""Reporter benchmark: the portal's read API through gRPC against the raw MongoDB query it
stands on, measured side by side in the same run.

The read model is seeded straight into the reporter's database (``--accounts`` accounts,
three products each, ``--incidents`` incidents per account, counts and endpoints), then the
reporter runs as deployed (subprocess, TLS gRPC, real Ed25519 tokens) and answers
``ListCustomerAccounts`` (an operator's first page of 50 rows) and ``ListIncidents`` (one
account's administrator, page of 50, high severity and above) ``--calls`` times each, one
call at a time. The reference is the same query issued with pymongo from this process: for
the accounts screen the four finds the screen is made of (accounts page, their products,
counts, nonconforming endpoints); for incidents the one find with the same filter, sort and
limit. The ratio (p50 gRPC / p50 raw) is what the API layer costs: TLS, token verification,
scoping, protobuf conversion.

    .venv/bin/python bench/bench_reporter.py                    # 100 accounts x 40 incidents
    .venv/bin/python bench/bench_reporter.py --accounts 1000 --incidents 200 --calls 500

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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tmsp.events.v1 import accounts_pb2, detections_pb2, incidents_pb2, products_pb2
from tmsp.reporter.v1 import reporter_pb2, reporter_pb2_grpc
from tmsp_common.authn import Principal, Role
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.mongo import close, connect
from tmsp_common.testing import (
    ServiceProcess,
    free_port,
    leftovers_removed,
    local_infra,
    unique,
)
from tmsp_common.tokens import TokenSigner, public_pem
from tmsp_reporter.adapters.mongo import ReadModel, create_indexes
from tmsp_reporter.testing import reporter_env

NOW = datetime.now(UTC).replace(microsecond=0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def seed(read: ReadModel, accounts: int, incidents: int) -> None:
    for a in range(accounts):
        aid = f"acct-{a:05d}"
        await read.apply_account(
            accounts_pb2.AccountSnapshot(
                account_id=aid, name=f"Account {a:05d}", company_name=f"Company {a}", version=1
            ),
            NOW,
        )
        for p in range(3):
            await read.apply_product(
                products_pb2.ProductSnapshot(
                    product_id=f"{aid}-p{p}",
                    account_id=aid,
                    kind=products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
                    name=f"Sensor {p}",
                    version=1,
                )
            )
        count = incidents_pb2.IncidentCount(account_id=aid, open_incidents=3, daily=True)
        await read.apply_count(count, NOW)
        for n in range(incidents):
            inc = incidents_pb2.Incident(
                incident_id=f"{aid}-i{n:05d}",
                account_id=aid,
                title=f"Threat {n % 17}",
                severity=detections_pb2.Severity.ValueType(1 + n % 5),
                status=incidents_pb2.INCIDENT_STATUS_NEW,
                endpoints=[detections_pb2.Endpoint(host=f"pc-{n % 40}")],
                attack_tags=["attack.execution"],
                version=1,
            )
            for k in range(5):
                inc.timeline.add(event_id=f"e{k}", rule_id="r", summary="step " * 8)
            inc.first_seen.CopyFrom(to_timestamp(NOW - timedelta(minutes=n * 7)))
            inc.last_seen.CopyFrom(inc.first_seen)
            await read.apply_incident(inc, NOW)


async def timed(
    system: Callable[[], Awaitable[Any]], reference: Callable[[], Awaitable[Any]], n: int
) -> tuple[list[float], list[float]]:
    """Latencies in ms of ``n`` calls of each, interleaved so that load from elsewhere on
    the machine falls on both alike."""
    await system()  # warm-up (connections, caches, key fetch)
    await reference()
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for call, sink in ((system, out[0]), (reference, out[1])):
            started = time.perf_counter()
            await call()
            sink.append((time.perf_counter() - started) * 1000)
    return out


def figures(grpc_ms: list[float], raw_ms: list[float]) -> dict[str, float]:
    return {
        "grpc_p50_ms": round(statistics.median(grpc_ms), 2),
        "grpc_p99_ms": round(pct(grpc_ms, 0.99), 2),
        "raw_p50_ms": round(statistics.median(raw_ms), 2),
        "raw_p99_ms": round(pct(raw_ms, 0.99), 2),
        "ratio_p50": round(statistics.median(grpc_ms) / statistics.median(raw_ms), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    infra = local_infra(start=True)
    prefix = f"{unique('bench')}."
    database = prefix.rstrip(".") + "_reporter"
    db = await connect(infra.mongo_url, database)
    read = ReadModel(db)
    await create_indexes(db)
    started = time.perf_counter()
    await seed(read, args.accounts, args.incidents)
    seed_s = time.perf_counter() - started
    print(f"seeded {args.accounts} accounts in {seed_s:.1f}s", file=sys.stderr)

    signer = TokenSigner(Ed25519PrivateKey.generate(), "k-bench")
    operator = bearer(
        signer.issue(Principal("op", "provider", frozenset({Role.PROVIDER_OPERATOR})))
    )
    admin = bearer(
        signer.issue(Principal("adm", "acct-00000", frozenset({Role.ACCOUNT_ADMINISTRATOR})))
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as tls_dir:
        env = reporter_env(
            infra_env=infra.env(),
            prefix=prefix,
            database=database,
            grpc_port=port,
            tls_dir=tls_dir,
            public_keys={signer.kid: public_pem(signer._key).decode()},  # noqa: SLF001
            scheduler_enabled="false",
        )
        proc = ServiceProcess("tmsp_reporter", env).start()
        try:
            proc.wait_for_log("service ready", timeout=90)
            ch = channel(f"127.0.0.1:{port}", tls=True, tls_dir=tls_dir)
            stub = reporter_pb2_grpc.ReporterServiceStub(ch)
            accounts_req = reporter_pb2.ListCustomerAccountsRequest(page_size=50)
            incidents_req = reporter_pb2.ListIncidentsRequest(
                page_size=50, min_severity=detections_pb2.SEVERITY_HIGH
            )

            async def grpc_accounts() -> None:
                r = await stub.ListCustomerAccounts(accounts_req, metadata=operator)
                assert len(r.accounts) == min(50, args.accounts)

            async def raw_accounts() -> None:
                page = [
                    d
                    async for d in db["accounts"]
                    .find({"deleted": {"$ne": True}})
                    .sort([("name_key", 1), ("_id", 1)])
                    .limit(50)
                ]
                ids = [d["_id"] for d in page]
                for coll in ("products", "incident_counts"):
                    _ = [d async for d in db[coll].find({"account_id": {"$in": ids}})]
                _ = [
                    d
                    async for d in db["nonconforming"].find(
                        {"account_id": {"$in": ids}, "cleared": {"$ne": True}}, {"account_id": 1}
                    )
                ]

            async def grpc_incidents() -> None:
                r = await stub.ListIncidents(incidents_req, metadata=admin)
                assert r.incidents

            async def raw_incidents() -> None:
                _ = [
                    d
                    async for d in db["incidents"]
                    .find({"account_id": "acct-00000", "severity": {"$gte": 4}})
                    .sort([("last_seen", -1), ("_id", -1)])
                    .limit(50)
                ]

            result: dict[str, Any] = {
                "accounts": args.accounts,
                "incidents_per_account": args.incidents,
                "calls": args.calls,
                "seed_seconds": round(seed_s, 1),
            }
            result["list_customer_accounts"] = figures(
                *await timed(grpc_accounts, raw_accounts, args.calls)
            )
            result["list_incidents"] = figures(
                *await timed(grpc_incidents, raw_incidents, args.calls)
            )
            await ch.close()
        finally:
            proc.terminate()
            await db.client.drop_database(database)
            await close(db)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--incidents", type=int, default=40)
    parser.add_argument("--calls", type=int, default=200)
    with leftovers_removed():
        print(json.dumps(asyncio.run(main(parser.parse_args()))))

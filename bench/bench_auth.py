"""Auth benchmark: login throughput (password + TOTP) per core vs the raw argon2id rate.

Both are measured in the same run, at the same argon2id parameters (OWASP: 19 MiB, t=2,
p=1 by default):

- reference: argon2id hashes per CPU-second in this process (argon2-cffi, one thread);
- system: complete logins (Login with the password, then VerifySecondFactor with a pyotp
  code) per CPU-second of the auth service process, run as deployed (subprocess, TLS gRPC,
  FerretDB, Kafka with acks=all for the audit events).

``ratio`` = logins per CPU-second / hashes per CPU-second: 1.0 would mean the service costs
nothing beyond the one hash a login must pay. Also reported: TOTP verification latency
(VerifySecondFactor round trip through gRPC) p50/p99. Keycloak publishes ~15 password
logins/s per vCPU (at its weaker default hashing); ``vs_keycloak`` is our logins per
CPU-second divided by 15.

    .venv/bin/python bench/bench_auth.py            # 24 users x 2 logins (1 + 2 workers)
    .venv/bin/python bench/bench_auth.py --users 60 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEYCLOAK_LOGINS_PER_VCPU = 15.0


def raw_hash_rate(memory_kib: int, time_cost: int, seconds: float) -> dict[str, float]:
    from argon2 import PasswordHasher, Type

    ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID)
    count = 0
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or count < 5:
        ph.hash("correct horse battery staple")
        count += 1
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    wall = time.perf_counter() - start
    return {"hashes": count, "per_cpu_second": count / cpu, "per_wall_second": count / wall}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tmsp.auth.v1 import auth_pb2
    from tmsp.events.v1 import notifications_pb2 as n_pb2
    from tmsp_auth.testing import (
        AuthClient,
        Mailbox,
        code_for_step,
        md,
        new_password,
        run_cli,
        service_env,
        start_service,
    )
    from tmsp_common.testing import local_infra, process_cpu_seconds, unique

    K = n_pb2.NotificationKind
    reference = raw_hash_rate(args.memory_kib, args.time_cost, args.reference_seconds)
    infra = local_infra()
    prefix = f"{unique('benchauth')}."
    tls_dir = Path(tempfile.mkdtemp(prefix="bench-auth-tls-"))
    env = service_env(
        infra.env(),
        prefix,
        prefix.rstrip(".") + "_auth",
        tls_dir,
        TMSP_AUTH_ARGON2_MEMORY_KIB=str(args.memory_kib),
        TMSP_AUTH_ARGON2_TIME_COST=str(args.time_cost),
    )
    op_email, op_password = "bench-operator@example.com", "bench-operator-passphrase"
    run_cli(env, ["bootstrap-operator", "--email", op_email, "--password-stdin"], op_password)
    proc = start_service(env)
    client = AuthClient(f"localhost:{env['TMSP_AUTH_GRPC_PORT']}", str(tls_dir))
    try:
        async with Mailbox(infra.kafka_bootstrap, prefix) as mail:
            op = await client.session(op_email, op_password)
            account = (
                await client.accounts.CreateAccount(
                    auth_pb2.CreateAccountRequest(account=auth_pb2.Account(name=unique("Bench "))),
                    metadata=md(op),
                )
            ).account
            users: list[tuple[str, str, str]] = []
            for _ in range(args.users):
                email = f"{unique('b')}@example.com"
                await client.accounts.CreateUser(
                    auth_pb2.CreateUserRequest(
                        account_id=account.account_id,
                        email=email,
                        roles=[auth_pb2.ROLE_ANALYST],
                    ),
                    metadata=md(op),
                )
                invite = await mail.next(K.NOTIFICATION_KIND_PASSWORD_RESET, email)
                password = new_password()
                await client.auth.ResetPassword(
                    auth_pb2.ResetPasswordRequest(
                        token=invite.params["reset_url"].rsplit("token=", 1)[1],
                        new_password=password,
                    )
                )
                session = await client.session(email, password)
                await client.auth.SendConfirmationEmail(
                    auth_pb2.SendConfirmationEmailRequest(), metadata=md(session)
                )
                note = await mail.next(K.NOTIFICATION_KIND_CONFIRMATION_CODE, email)
                prov = await client.auth.ConfirmSetupCode(
                    auth_pb2.ConfirmSetupCodeRequest(confirmation_code=note.params["code"]),
                    metadata=md(session),
                )
                await client.auth.EnableTwoFactor(
                    auth_pb2.EnableTwoFactorRequest(
                        totp_code=code_for_step(prov.secret_base32, -1)
                    ),
                    metadata=md(session),
                )
                users.append((email, password, prov.secret_base32))

        # Each user logs in twice (steps 0 and +1 of the window; each step works once):
        # phase 1 one at a time (TOTP latency without queueing), phase 2 concurrently
        # (throughput, and latency under load).
        pid = proc.pid()

        async def phase(offset: int, workers: int) -> dict[str, Any]:
            queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
            for user in users:
                queue.put_nowait(user)
            latencies: list[float] = []
            failures = 0

            async def worker() -> None:
                nonlocal failures
                while not queue.empty():
                    email, password, secret = queue.get_nowait()
                    challenge = await client.login(email, password)
                    code = code_for_step(secret, offset)
                    started = time.perf_counter()
                    try:
                        await client.auth.VerifySecondFactor(
                            auth_pb2.VerifySecondFactorRequest(
                                challenge_id=challenge.challenge_id, totp_code=code
                            )
                        )
                    except Exception:  # noqa: BLE001 - counted, reported
                        failures += 1
                    latencies.append(time.perf_counter() - started)

            cpu0, wall0 = process_cpu_seconds(pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(workers)))
            cpu, wall = process_cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
            return {
                "logins": len(users) - failures,
                "failures": failures,
                "cpu": cpu,
                "wall": wall,
                "latencies": latencies,
            }

        sequential = await phase(0, 1)
        loaded = await phase(1, args.concurrency)
    finally:
        await client.close()
        proc.terminate()

    logins = sequential["logins"] + loaded["logins"]
    cpu = sequential["cpu"] + loaded["cpu"]
    per_cpu = logins / cpu if cpu else 0.0
    idle, busy = sequential["latencies"], loaded["latencies"]
    return {
        "benchmark": "auth",
        "argon2id": {"memory_kib": args.memory_kib, "time_cost": args.time_cost, "p": 1},
        "reference_hashes_per_cpu_second": round(reference["per_cpu_second"], 2),
        "logins": logins,
        "login_failures": sequential["failures"] + loaded["failures"],
        "service_cpu_seconds": round(cpu, 3),
        "logins_per_cpu_second": round(per_cpu, 2),
        "logins_per_wall_second_concurrent": round(loaded["logins"] / loaded["wall"], 2),
        "ratio_to_raw_hash_rate": round(per_cpu / reference["per_cpu_second"], 3),
        "totp_verify_p50_ms": round(statistics.median(idle) * 1000, 2),
        "totp_verify_p99_ms": round(pct(idle, 0.99) * 1000, 2),
        "totp_verify_under_load_p50_ms": round(statistics.median(busy) * 1000, 2),
        "totp_verify_under_load_p99_ms": round(pct(busy, 0.99) * 1000, 2),
        "keycloak_logins_per_vcpu": KEYCLOAK_LOGINS_PER_VCPU,
        "vs_keycloak": round(per_cpu / KEYCLOAK_LOGINS_PER_VCPU, 2),
        "concurrency": args.concurrency,
        "users": len(users),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    return await run(args)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--memory-kib", type=int, default=19456)
    parser.add_argument("--time-cost", type=int, default=2)
    parser.add_argument("--reference-seconds", type=float, default=3.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from tmsp_common.testing import leftovers_removed

    with leftovers_removed():
        print(json.dumps(asyncio.run(main(parse(sys.argv[1:])))))

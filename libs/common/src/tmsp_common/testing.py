"""Helpers for integration tests against the real stack (no pytest import here).

- :func:`local_infra` finds (and, if allowed, starts) the Kafka broker and the Mongo-wire
  server the tests run against.
- :class:`ServiceProcess` runs a service the way it is deployed: its own process, its entry
  point, configured only through environment variables.
- :class:`TopicReader` reads a topic from the beginning to assert what was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import Message
from pymongo import AsyncMongoClient

from tmsp_common.kafka.envelope import unwrap
from tmsp_common.kafka.topics import Topic
from tmsp_common.settings import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_MONGO_URL

REPO_ROOT = Path(__file__).resolve().parents[4]
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    mongo_url: str

    def env(self) -> dict[str, str]:
        return {"TMSP_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "TMSP_MONGO_URL": self.mongo_url}


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return _reachable(host or "127.0.0.1", int(port))


def mongo_reachable(url: str) -> bool:
    parts = urlsplit(url)
    return _reachable(parts.hostname or "127.0.0.1", parts.port or 27017)


def local_infra(start: bool = True) -> Infra:
    """Kafka and Mongo from ``TMSP_KAFKA_BOOTSTRAP``/``TMSP_MONGO_URL`` or the local stack.

    When the local stack is not running and ``start`` is true, ``deploy/local/infra.py up``
    starts it (idempotent). Raises RuntimeError naming what is unreachable.
    """
    infra = Infra(
        os.environ.get("TMSP_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP),
        os.environ.get("TMSP_MONGO_URL", DEFAULT_MONGO_URL),
    )
    if kafka_reachable(infra.kafka_bootstrap) and mongo_reachable(infra.mongo_url):
        return infra
    if start:
        subprocess.run(  # noqa: S603
            [sys.executable, str(REPO_ROOT / "deploy" / "local" / "infra.py"), "up"],
            check=False,
            cwd=REPO_ROOT,
        )
    missing = [
        what
        for what, ok in (
            (f"Kafka at {infra.kafka_bootstrap}", kafka_reachable(infra.kafka_bootstrap)),
            (f"MongoDB at {infra.mongo_url}", mongo_reachable(infra.mongo_url)),
        )
        if not ok
    ]
    if missing:
        raise RuntimeError("cannot reach " + " and ".join(missing))
    return infra


def docker_engine_available() -> bool:
    """True when a Docker engine answers (the testcontainers path can run)."""
    try:
        import docker  # type: ignore[import-untyped]  # testcontainers' dependency

        docker.from_env().ping()
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False
    return True


_UNIQUE_NAMES: set[str] = set()
"""Every name :func:`unique` handed out in this process (see :func:`remove_leftovers`)."""


def unique(prefix: str = "t") -> str:
    """A short unique name for topics, groups and databases of one test."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    _UNIQUE_NAMES.add(name)
    return name


async def remove_leftovers(infra: Infra, heads: Iterable[str] | None = None) -> tuple[int, int]:
    """Delete the topics and databases whose names begin with one of ``heads`` (by default,
    every name :func:`unique` handed out in this process); returns how many of each.

    Tests and benchmarks name what they create after :func:`unique`, so a session removes
    exactly its own topics and databases, never those of a session running beside it. Left
    in place, a development broker accumulates thousands of partitions, each of which it
    opens at every start.
    """
    prefixes = tuple(sorted(_UNIQUE_NAMES if heads is None else set(heads)))
    if not prefixes:
        return 0, 0
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
        for i in range(0, len(topics), _DELETE_BATCH):
            await admin.delete_topics(topics[i : i + _DELETE_BATCH], timeout_ms=60_000)
    finally:
        await admin.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
    try:
        databases = [d for d in await client.list_database_names() if d.startswith(prefixes)]
        for name in databases:
            await client.drop_database(name)
    finally:
        await client.close()
    return len(topics), len(databases)


_DELETE_BATCH = 200
"""Topics per DeleteTopics request."""


@contextlib.contextmanager
def leftovers_removed() -> Iterator[None]:
    """Run a benchmark or script, then remove the topics and databases it named after
    :func:`unique` (see :func:`remove_leftovers`); a broker gone by then is skipped."""
    try:
        yield
    finally:
        _remove_own_leftovers()


def _remove_own_leftovers() -> None:
    if not _UNIQUE_NAMES:
        return
    try:
        infra = local_infra(start=False)
    except RuntimeError:
        return
    topics, databases = asyncio.run(remove_leftovers(infra))
    print(f"removed {topics} topics and {databases} databases", file=sys.stderr)


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port a test service may listen on: free now, never handed out before in this
    process, and below the kernel's ephemeral range. (Port 0's answer comes from that
    range, which outgoing connections, to Kafka for instance, draw from too: such a port
    could be taken as a source port before the service binds it.)"""
    high = min(_ephemeral_low(), 65536)
    low = max(1024, high - 12000)
    for _ in range(1000):
        port = random.randrange(low, high)  # noqa: S311 - not a secret
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``): what a
    benchmark divides by, where the broker and FerretDB share the machine's cores."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` in MiB (Linux ``/proc``:
    ``VmRSS``, ``VmHWM``)."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) / 1024  # kB
    return found["VmRSS"], found["VmHWM"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (Linux ``/proc``)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in task.read_text().split())
    return tree


def process_tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (see :func:`process_cpu_seconds`) of ``pid`` and each process below it,
    by process id: a worker that runs some of its stages in processes of its own."""
    out = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            out[member] = process_cpu_seconds(member)
    return out


@dataclass
class ServiceProcess:
    """A service started as a subprocess (``python -m <module>``), as in production."""

    module: str
    env: Mapping[str, str]
    args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.module} was not started")
        return self.proc.pid

    def start(self) -> ServiceProcess:
        full_env = {**os.environ, **self.env}
        full_env.setdefault("TMSP_LOG_FORMAT", "json")
        if self.log_path is None:
            self.log_path = Path(REPO_ROOT / ".local" / "test-logs" / f"{unique(self.module)}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", self.module, *self.args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        return self

    @property
    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    @property
    def logged_content(self) -> str:
        """The output without each JSON line's ``timestamp``: what a "never logged" check
        reads (a six-digit code can be a timestamp's microseconds: seen as a flaky test)."""
        lines = []
        for line in self.logs.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                lines.append(line)
                continue
            if isinstance(record, dict):
                record.pop("timestamp", None)
            lines.append(json.dumps(record))
        return "\n".join(lines)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        """Block until ``needle`` appears in the output; RuntimeError with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logs:
                return
            if not self.alive():
                raise RuntimeError(f"{self.module} exited early:\n{self.logs[-4000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.module}: no {needle!r} after {timeout}s:\n{self.logs[-4000:]}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TopicReader:
    """Reads a topic from the beginning (no group, no commits) for assertions."""

    def __init__(self, bootstrap: str, topic: Topic, prefix: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(
            topic.qualified(prefix),
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.records: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._consumer.stop()

    async def read_until(
        self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0
    ) -> list[Any]:
        """Collect raw records until ``predicate(records)`` holds; TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic.name}: condition not met; {len(self.records)} records read"
                )
            batch = await self._consumer.getmany(timeout_ms=200)
            for part in batch.values():
                self.records.extend(part)
        return self.records

    async def read_events(
        self, message_type: type[M], count: int, timeout: float = 30.0
    ) -> list[M]:
        """The first ``count`` payloads of the topic, decoded."""
        records = await self.read_until(lambda rs: len(rs) >= count, timeout)
        return [unwrap(r.value, message_type)[1] for r in records[:count]]


async def group_behind(
    admin: AIOKafkaAdminClient, group: str, topic: str, ends: dict[int, int]
) -> int:
    """How many records of ``topic`` (``ends``: partition -> end offset) the consumer group
    has not committed yet."""
    offsets = await admin.list_consumer_group_offsets(group)
    got = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    return sum(max(0, end - max(got.get(p, 0), 0)) for p, end in ends.items())


async def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Await ``condition()`` (sync or async) until truthy; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)

"""In-memory adapters for unit tests and benchmarks (no I/O)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from tmsp.events.v1 import status_pb2
from tmsp_common.authn import Principal, Role
from tmsp_common.clock import FakeClock
from tmsp_ingest.domain.intake import Rejection, UploadContext, normalise_line
from tmsp_ingest.domain.patterns import CleanupPattern, pattern_key, supersedes
from tmsp_ingest.domain.products import AccountView, Kind, Product, Protocol_, Registration
from tmsp_ingest.domain.throttle import FailureThrottle
from tmsp_ingest.service_layer.authenticate import ProductAuthenticator
from tmsp_ingest.service_layer.forensics import ForensicIntake, PatternCatalogue
from tmsp_ingest.service_layer.intake import Intake
from tmsp_ingest.service_layer.ports import (
    LedgerEntry,
    ProductExists,
    UploadStats,
    VersionConflict,
)
from tmsp_ingest.service_layer.registry import Registry
from tmsp_ingest.service_layer.status import StatusService


class CheapHasher:
    """Salted SHA-256 standing in for argon2id in unit tests (never in production)."""

    def __init__(self) -> None:
        self.verifications = 0

    def hash(self, password: str) -> str:
        return "sha256$" + hashlib.sha256(b"salt" + password.encode()).hexdigest()

    def verify(self, encoded: str, password: str) -> bool:
        self.verifications += 1
        return hmac.compare_digest(encoded, self.hash(password))


class MemoryProducts:
    def __init__(self) -> None:
        self.items: dict[str, Product] = {}

    async def get(self, product_id: str) -> Product | None:
        return self.items.get(product_id)

    async def by_user_name(self, user_name: str) -> Product | None:
        return next((p for p in self.items.values() if p.user_name == user_name), None)

    async def add(self, product: Product) -> None:
        if product.product_id in self.items:
            raise ProductExists(product.product_id)
        self.items[product.product_id] = product

    async def update(self, product: Product, expected_version: int) -> None:
        current = self.items.get(product.product_id)
        if current is None or current.version != expected_version:
            raise VersionConflict(product.product_id)
        self.items[product.product_id] = product

    async def list_for_account(self, account_id: str) -> list[Product]:
        return sorted(
            (p for p in self.items.values() if p.account_id == account_id),
            key=lambda p: p.product_id,
        )


class MemoryAccounts:
    def __init__(self) -> None:
        self.items: dict[str, AccountView] = {}

    async def get(self, account_id: str) -> AccountView | None:
        return self.items.get(account_id)

    async def upsert(self, account: AccountView) -> bool:
        current = self.items.get(account.account_id)
        if current is not None and current.version > account.version:
            return False
        self.items[account.account_id] = account
        return True


class MemoryPublisher:
    """ProductPublisher, UploadSink, HeartbeatSink and ForensicSink recording what was
    published."""

    def __init__(self) -> None:
        self.snapshots: list[Product] = []
        self.events: list[object] = []
        self.rejections: list[Rejection] = []
        self.uploads: list[status_pb2.UploadReceived] = []
        self.heartbeats: list[status_pb2.Heartbeat] = []
        self.chunks: list[status_pb2.ForensicDataChunk] = []
        self.gate: asyncio.Event | None = None
        """When set, each forensic chunk waits for it (a slow broker)."""
        self.fail = False
        self.fail_snapshots = False

    async def product_changed(self, product: Product) -> None:
        from tmsp_common.errors import Unavailable

        if self.fail_snapshots:
            raise Unavailable("bus down")
        self.snapshots.append(replace(product))

    async def publish_records(
        self, lines: Sequence[bytes], ctx: UploadContext, first_line: int = 1
    ) -> UploadStats:
        from tmsp_common.errors import Unavailable

        if self.fail:
            raise Unavailable("bus down")
        stats = UploadStats()
        for index, line in enumerate(lines):
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            result = normalise_line(line, first_line + index, ctx)
            if isinstance(result, Rejection):
                self.rejections.append(result)
                stats.rejected[result.format_label] = stats.rejected.get(result.format_label, 0) + 1
            else:
                self.events.append(result[0])
                label = result[1].label
                stats.accepted[label] = stats.accepted.get(label, 0) + 1
        return stats

    async def upload_received(self, event: status_pb2.UploadReceived, event_id: str) -> None:
        self.uploads.append(event)

    async def heartbeat(self, event: status_pb2.Heartbeat) -> None:
        self.heartbeats.append(event)

    async def forensic_chunks(self, chunks: Iterable[status_pb2.ForensicDataChunk]) -> None:
        from tmsp_common.errors import Unavailable

        if self.fail:
            raise Unavailable("bus down")
        for chunk in chunks:
            if self.gate is not None:
                await self.gate.wait()
            self.chunks.append(chunk)


class MemoryPatterns:
    """PatternRepository keeping the highest version of each pattern."""

    def __init__(self) -> None:
        self.items: dict[str, CleanupPattern] = {}

    async def put(self, pattern: CleanupPattern) -> bool:
        current = self.items.get(pattern.key)
        if not supersedes(pattern.version, current.version if current else None):
            return False
        self.items[pattern.key] = pattern
        return True

    async def get(self, account_id: str, name: str) -> CleanupPattern | None:
        return self.items.get(pattern_key(account_id, name))

    async def names(self, account_id: str) -> list[CleanupPattern]:
        return sorted(
            (
                replace(p, content=b"")
                for p in self.items.values()
                if p.account_id == account_id and not p.deleted
            ),
            key=lambda p: p.name,
        )


class MemoryLedger:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], LedgerEntry] = {}

    async def find(self, product_id: str, content_sha256: str) -> LedgerEntry | None:
        return self.items.get((product_id, content_sha256))

    async def record(self, entry: LedgerEntry) -> None:
        self.items.setdefault((entry.product_id, entry.content_sha256), entry)


class MemoryTasks:
    def __init__(self) -> None:
        self.items: dict[str, tuple[status_pb2.MitigationTask, bool]] = {}

    async def add(self, task: status_pb2.MitigationTask) -> None:
        self.items.setdefault(task.task_id, (task, False))

    async def pending(self, product_id: str, limit: int) -> list[status_pb2.MitigationTask]:
        return [
            t
            for t, done in sorted(self.items.values(), key=lambda x: x[0].task_id)
            if t.product_id == product_id and not done
        ][:limit]

    async def get(self, task_id: str) -> status_pb2.MitigationTask | None:
        entry = self.items.get(task_id)
        return entry[0] if entry else None

    async def acknowledge(self, product_id: str, task_ids: Iterable[str]) -> int:
        count = 0
        for task_id in task_ids:
            entry = self.items.get(task_id)
            if entry and entry[0].product_id == product_id and not entry[1]:
                self.items[task_id] = (entry[0], True)
                count += 1
        return count


class FakeIssuer:
    def __init__(self) -> None:
        self.issued = 0

    def issue(self, product_id: str) -> tuple[bytes, bytes, bytes, str]:
        self.issued += 1
        fingerprint = hashlib.sha256(f"{product_id}:{self.issued}".encode()).hexdigest()
        return b"CERT", b"KEY", b"CA", fingerprint


START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
OPERATOR = Principal("op-1", "provider", frozenset({Role.PROVIDER_OPERATOR}))
ADMIN_A = Principal("u-a", "acct-a", frozenset({Role.ACCOUNT_ADMINISTRATOR}))
ADMIN_B = Principal("u-b", "acct-b", frozenset({Role.ACCOUNT_ADMINISTRATOR}))


@dataclass
class World:
    clock: FakeClock
    products: MemoryProducts
    accounts: MemoryAccounts
    publisher: MemoryPublisher
    hasher: CheapHasher
    issuer: FakeIssuer
    ledger: MemoryLedger
    tasks: MemoryTasks
    registry: Registry
    auth: ProductAuthenticator
    intake: Intake
    status: StatusService
    forensics: ForensicIntake
    patterns: PatternCatalogue


def make_world() -> World:
    """Every use case wired to in-memory adapters and a fake clock at START."""
    clock = FakeClock(START)
    products, accounts = MemoryProducts(), MemoryAccounts()
    publisher, hasher, issuer = MemoryPublisher(), CheapHasher(), FakeIssuer()
    ledger, tasks = MemoryLedger(), MemoryTasks()
    accounts.items["acct-a"] = AccountView(
        "acct-a", "Owner@A.example", START + timedelta(days=30), False, 1
    )
    accounts.items["acct-b"] = AccountView("acct-b", "owner@b.example", None, False, 1)
    intake = Intake(publisher, ledger, clock, 1_000_000)
    return World(
        clock,
        products,
        accounts,
        publisher,
        hasher,
        issuer,
        ledger,
        tasks,
        Registry(products, accounts, publisher, hasher, issuer, clock),
        ProductAuthenticator(products, accounts, hasher, clock, FailureThrottle(3, 60.0), ttl=30.0),
        intake,
        StatusService(publisher, tasks, clock),
        ForensicIntake(publisher, tasks, intake, clock, 2_000_000),
        PatternCatalogue(MemoryPatterns()),
    )


REG = Registration(
    account_id="acct-a",
    kind=Kind.THREAT_DISCOVERY_APPLIANCE,
    name="TDA Berlin",
    protocol=Protocol_.SSH,
    upload_frequency_seconds=300,
    registration_email="owner@a.example",
    upload_bandwidth=0,
    download_bandwidth=65536,
)

"""What the use cases need from the outside world; adapters implement these."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tmsp.events.v1 import status_pb2
from tmsp_ingest.domain.intake import UploadContext
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import AccountView, Product


class VersionConflict(Exception):
    """Someone else changed the product first; reload and retry."""


class ProductExists(Exception):
    """A product with this id is stored already."""


class ProductRepository(Protocol):
    async def get(self, product_id: str) -> Product | None: ...

    async def by_user_name(self, user_name: str) -> Product | None: ...

    async def add(self, product: Product) -> None:
        """Store a new product; :class:`ProductExists` if its id is taken."""

    async def update(self, product: Product, expected_version: int) -> None:
        """Replace the stored product if it is still at ``expected_version``;
        :class:`VersionConflict` otherwise."""

    async def list_for_account(self, account_id: str) -> list[Product]: ...


class AccountRepository(Protocol):
    async def get(self, account_id: str) -> AccountView | None: ...

    async def upsert(self, account: AccountView) -> bool:
        """Store ``account`` unless a newer version is stored; True when stored."""


class ProductPublisher(Protocol):
    async def product_changed(self, product: Product) -> None:
        """Publish the product's snapshot and wait for the broker's acknowledgement."""


class CertificateIssuer(Protocol):
    def issue(self, product_id: str) -> tuple[bytes, bytes, bytes, str]:
        """(certificate PEM, private key PEM, CA PEM, certificate SHA-256 hex)."""


@dataclass
class UploadStats:
    """Counts for one upload, per format label."""

    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def accepted_total(self) -> int:
        return sum(self.accepted.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def merge(self, other: UploadStats) -> None:
        for label, count in other.accepted.items():
            self.accepted[label] = self.accepted.get(label, 0) + count
        for label, count in other.rejected.items():
            self.rejected[label] = self.rejected.get(label, 0) + count


class UploadSink(Protocol):
    async def publish_records(
        self, lines: Sequence[bytes], ctx: UploadContext, first_line: int = 1
    ) -> UploadStats:
        """Normalise and publish every line (``lines[i]`` is line ``first_line + i``; events
        and rejections) and wait for every acknowledgement; raises
        :class:`tmsp_common.errors.Unavailable` if the bus fails."""

    async def upload_received(self, event: status_pb2.UploadReceived, event_id: str) -> None: ...


@dataclass(frozen=True)
class LedgerEntry:
    product_id: str
    content_sha256: str
    file_name: str
    accepted: int
    rejected: int


class UploadLedger(Protocol):
    async def find(self, product_id: str, content_sha256: str) -> LedgerEntry | None: ...

    async def record(self, entry: LedgerEntry) -> None: ...


class HeartbeatSink(Protocol):
    async def heartbeat(self, event: status_pb2.Heartbeat) -> None: ...


class TaskRepository(Protocol):
    async def add(self, task: status_pb2.MitigationTask) -> None:
        """Store a task once (redelivery is harmless)."""

    async def pending(self, product_id: str, limit: int) -> list[status_pb2.MitigationTask]: ...

    async def acknowledge(self, product_id: str, task_ids: Iterable[str]) -> int: ...

    async def get(self, task_id: str) -> status_pb2.MitigationTask | None:
        """The stored task (acknowledged or not), or None."""


class ForensicSink(Protocol):
    async def forensic_chunks(self, chunks: Iterable[status_pb2.ForensicDataChunk]) -> None:
        """Publish every chunk (key ``upload_id``, event id ``upload_id:index``) and wait for
        every acknowledgement; raises :class:`tmsp_common.errors.Unavailable` if the bus
        fails."""


class PatternRepository(Protocol):
    async def put(self, pattern: CleanupPattern) -> bool:
        """Store ``pattern`` (or its tombstone) unless a newer version of it is stored;
        True when stored."""

    async def get(self, account_id: str, name: str) -> CleanupPattern | None: ...

    async def names(self, account_id: str) -> list[CleanupPattern]:
        """The account's patterns that are not removed, by name, without their content."""

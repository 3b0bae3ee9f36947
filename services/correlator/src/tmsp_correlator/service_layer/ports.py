"""What the use cases need from the outside world (implemented in adapters/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from google.protobuf.message import Message

from tmsp_common.kafka.topics import Topic


class Publisher(Protocol):
    """Puts an enveloped event on a registry topic (flushed before offsets are committed)."""

    async def publish(
        self,
        topic: Topic,
        payload: Message,
        *,
        key: str,
        account_id: str = "",
        occurred_at: datetime | None = None,
    ) -> None: ...


class IncidentRepository(Protocol):
    async def upsert_many(self, incidents: list[dict[str, Any]]) -> set[str]:
        """Store each incident unless the same or a newer version is stored (bulk writes).

        Returns the ids of the incidents this call stored.
        """
        ...

    async def load(self, incident_id: str) -> dict[str, Any] | None:
        """The stored incident as a state dict (see domain.correlation), or None."""
        ...

    async def counts(self, account_id: str) -> tuple[int, int]:
        """(open, total) incidents of one account."""
        ...

    async def all_counts(self) -> dict[str, tuple[int, int]]:
        """(open, total) per account."""
        ...

    def forget(self) -> None:
        """Drop what this worker remembers of stored versions (its partitions were revoked:
        another worker may store newer versions meanwhile)."""
        ...

    async def purge(self, last_seen_before: datetime) -> int:
        """Remove incidents last seen before the cutoff; how many went."""
        ...


class NonconformingRepository(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, state: dict[str, Any], expected_version: int) -> bool:
        """Compare-and-set on the stored version; False when someone else changed it."""
        ...

    async def purge_cleared(self, updated_before: float) -> int:
        """Remove cleared endpoints whose last result is older than the cutoff (epoch s)."""
        ...


class MaintenanceRepository(Protocol):
    """The portal's log maintenance settings as this service last heard them."""

    async def log_retention(self) -> tuple[int, datetime | None] | None:
        """(log retention days, when an operator set them) or None: never heard."""
        ...

    async def set_log_retention(self, days: int, updated_at: datetime | None) -> bool:
        """Keep these unless newer settings are stored; whether they were kept."""
        ...


class LivenessRepository(Protocol):
    async def heartbeat(
        self,
        product_id: str,
        account_id: str,
        at: float,
        interval_s: float | None,
        compliance: bool | None,
    ) -> dict[str, Any] | None:
        """Record a heartbeat (newest wins); returns the document *before* the change."""
        ...

    async def upload(self, product_id: str, account_id: str, at: float) -> dict[str, Any] | None:
        """Record a finished upload (newest wins); returns the document before."""
        ...

    async def product(
        self,
        product_id: str,
        account_id: str,
        heartbeat_interval_s: float,
        upload_frequency_s: float,
        deregistered: bool,
    ) -> None: ...

    async def mark(self, product_id: str, expect: dict[str, Any], change: dict[str, Any]) -> bool:
        """Apply ``change`` if the fields in ``expect`` still hold (compare-and-set)."""
        ...

    async def scan(self) -> list[dict[str, Any]]: ...

    async def get(self, product_id: str) -> dict[str, Any] | None: ...


class RuleFileStore(Protocol):
    """The last clean version of each rule file, kept across restarts."""

    async def load(self) -> dict[str, str]: ...

    async def save(self, clean: dict[str, str]) -> None: ...

"""What the use cases need from the outside world."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import Message

from tmsp.events.v1 import incidents_pb2
from tmsp_common.kafka.topics import Topic
from tmsp_reporter.domain.model import AccountRow
from tmsp_reporter.domain.patterns import CleanupPatternEntry


class Publisher(Protocol):
    """Puts an event on the bus and returns once the broker acknowledged it."""

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any: ...


class Incidents(Protocol):
    """The read model's incidents (``ReadModel``)."""

    async def incident(
        self, account_id: str | None, incident_id: str
    ) -> incidents_pb2.Incident | None: ...


class Accounts(Protocol):
    """The read model's accounts (``ReadModel``)."""

    async def account(self, account_id: str) -> AccountRow | None: ...


class PatternRepository(Protocol):
    """The cleanup pattern catalogue (``adapters.mongo_patterns.PatternStore``)."""

    async def get(self, account_id: str, name: str) -> tuple[CleanupPatternEntry, bytes] | None: ...

    async def save(self, entry: CleanupPatternEntry, content: bytes, previous: int) -> None:
        """Store ``entry`` if the stored version is still ``previous`` (0: none);
        FailedPrecondition otherwise."""

    async def mark_published(self, entry: CleanupPatternEntry) -> None: ...

    async def unpublished(self) -> list[tuple[CleanupPatternEntry, bytes]]:
        """Every stored entry (of any account, removals too) not yet published, with its
        content."""

    async def list(self, account_id: str) -> list[CleanupPatternEntry]: ...

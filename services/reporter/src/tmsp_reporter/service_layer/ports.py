"""What the use cases need from the outside world."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import Message

from tmsp.events.v1 import incidents_pb2
from tmsp_common.kafka.topics import Topic


class Publisher(Protocol):
    """Puts an event on the bus and returns once the broker acknowledged it."""

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any: ...


class Incidents(Protocol):
    """The read model's incidents (``ReadModel``)."""

    async def incident(
        self, account_id: str | None, incident_id: str
    ) -> incidents_pb2.Incident | None: ...

"""What the use cases need from the outside world."""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import Message

from tmsp_common.kafka.topics import Topic


class Publisher(Protocol):
    """Puts an event on the bus and returns once the broker acknowledged it."""

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any: ...

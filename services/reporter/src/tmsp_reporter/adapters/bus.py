"""The producer as the use cases see it: broker failures become :class:`Unavailable`, so
the caller hears UNAVAILABLE (and may retry) rather than an internal error."""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaError
from google.protobuf.message import Message

from tmsp_common.errors import Unavailable
from tmsp_common.kafka.topics import Topic
from tmsp_reporter.service_layer.ports import Publisher


class BusPublisher:
    def __init__(self, producer: Publisher) -> None:
        self._producer = producer

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> Any:
        try:
            return await self._producer.publish(topic, payload, key=key, **kw)
        except KafkaError as exc:
            raise Unavailable(
                f"the event bus did not take it ({type(exc).__name__}); try again"
            ) from exc

"""Create the registry's topics at start-up, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tmsp_common.kafka.topics import Topic, with_dead_letters
from tmsp_common.lifecycle import DependencyUnavailable


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic],
    *,
    prefix: str = "",
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create each topic and its dead-letter topic if missing; returns the names created."""
    wanted = with_dead_letters(list(topics))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="tmsp-admin")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap} ({exc or type(exc).__name__})"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.qualified(prefix) not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name=t.qualified(prefix),
                num_partitions=t.partitions,
                replication_factor=replication_factor,
                topic_configs=t.config(),
            )
            for t in missing
        ]
        # another service may create them at the same time
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        return [t.qualified(prefix) for t in missing]
    finally:
        await admin.close()

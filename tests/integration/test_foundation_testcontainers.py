"""The testcontainers path: Kafka and MongoDB from images where a Docker engine is reachable.

Without a Docker engine (this machine, CI) this path is skipped; the integration tests run
against the embedded local stack instead and never skip for lack of it.
"""

from __future__ import annotations

import pytest

from tmsp.events.v1 import accounts_pb2
from tmsp_common.kafka import topics
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.mongo import close, connect, insert_idempotent
from tmsp_common.testing import TopicReader, docker_engine_available

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.slow]


@pytest.mark.skipif(not docker_engine_available(), reason="no Docker engine reachable")
async def test_bus_and_store_on_testcontainers() -> None:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    with KafkaContainer().with_kraft() as kafka, MongoDbContainer("mongo:8") as mongo:
        bootstrap = kafka.get_bootstrap_server()
        await ensure_topics(bootstrap, [topics.ACCOUNTS], prefix="tc.")
        async with EventProducer(bootstrap, service="test", topic_prefix="tc.") as producer:
            await producer.publish(
                topics.ACCOUNTS, accounts_pb2.AccountSnapshot(account_id="a1"), key="a1"
            )
        async with TopicReader(bootstrap, topics.ACCOUNTS, "tc.") as reader:
            (snapshot,) = await reader.read_events(accounts_pb2.AccountSnapshot, 1)
        assert snapshot.account_id == "a1"
        db = await connect(mongo.get_connection_url(), "tc")
        try:
            assert await insert_idempotent(db["e"], {"_id": "x"}) is True
            assert await insert_idempotent(db["e"], {"_id": "x"}) is False
        finally:
            await close(db)

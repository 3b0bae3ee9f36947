"""Session-wide infrastructure for integration tests.

Kafka and the Mongo-wire server are found (or started) once per session; each test isolates
itself with its own topic prefix, consumer group and database names (see ``names``). Where a
Docker engine is reachable and ``TMSP_TEST_TESTCONTAINERS=1``, testcontainers starts Kafka and
MongoDB instead; without an engine that branch is skipped, never the tests. Under CI=true a
test that cannot reach its infrastructure fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tmsp_common.testing import (
    Infra,
    docker_engine_available,
    local_infra,
    remove_leftovers,
    unique,
)

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    if os.environ.get("TMSP_TEST_TESTCONTAINERS") == "1" and docker_engine_available():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.mongodb import MongoDbContainer

        with KafkaContainer().with_kraft() as kafka, MongoDbContainer("mongo:8") as mongo:
            yield Infra(kafka.get_bootstrap_server(), mongo.get_connection_url())
        return
    try:
        found = local_infra(start=True)
    except RuntimeError as exc:
        if CI:
            pytest.fail(f"integration infrastructure unreachable under CI: {exc}")
        pytest.skip(f"integration infrastructure unreachable: {exc}")
    yield found
    # the session's own topics and databases (named after ``unique``), so that the shared
    # development broker does not grow by thousands of partitions per run
    asyncio.run(remove_leftovers(found))


@dataclass(frozen=True)
class Names:
    """Unique names for one test: topic prefix, consumer groups, databases."""

    prefix: str

    def group(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def database(self, name: str) -> str:
        return f"{self.prefix.rstrip('.').replace('.', '_')}_{name}"


@pytest.fixture
def names() -> Names:
    return Names(prefix=f"{unique('it')}.")

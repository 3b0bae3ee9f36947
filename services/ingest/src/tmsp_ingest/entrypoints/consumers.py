"""Kafka consumers of the gateway: the accounts projection, incoming mitigation tasks and
the accounts' cleanup pattern catalogues."""

from __future__ import annotations

from typing import Any

from tmsp.events.v1 import accounts_pb2, status_pb2
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_ingest import metrics
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import AccountView
from tmsp_ingest.service_layer.forensics import PatternCatalogue
from tmsp_ingest.service_layer.ports import AccountRepository, ProductRepository, TaskRepository


def account_view(snapshot: accounts_pb2.AccountSnapshot) -> AccountView:
    return AccountView(
        account_id=snapshot.account_id,
        managed_by_email=snapshot.managed_by_email,
        valid_until=from_timestamp(snapshot.valid_until)
        if snapshot.HasField("valid_until")
        else None,
        deleted=snapshot.deleted,
        version=snapshot.version,
    )


def accounts_handler(accounts: AccountRepository) -> Any:
    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            snapshot: accounts_pb2.AccountSnapshot = event.payload
            if not snapshot.account_id:
                raise InvalidEvent(event, "account snapshot without account_id")
            await accounts.upsert(account_view(snapshot))

    return handle


def tasks_handler(tasks: TaskRepository, products: ProductRepository) -> Any:
    """Store each task for its product's next heartbeat. A task naming an unknown product,
    or a product of another account than the task's, is dead-lettered (never handed out)."""

    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            task: status_pb2.MitigationTask = event.payload
            if not task.task_id or not task.product_id:
                raise InvalidEvent(event, "mitigation task without task_id or product_id")
            product = await products.get(task.product_id)
            if product is None:
                raise InvalidEvent(event, "mitigation task for an unknown product")
            if task.account_id != product.account_id:
                raise InvalidEvent(event, "mitigation task's account is not the product's")
            await tasks.add(task)

    return handle


def cleanup_pattern(event: status_pb2.CleanupPattern) -> CleanupPattern:
    return CleanupPattern(
        account_id=event.account_id,
        name=event.name,
        content=event.content,
        content_sha256=event.content_sha256,
        size=event.size,
        version=event.version,
        deleted=event.deleted,
        updated_at=from_timestamp(event.updated_at) if event.HasField("updated_at") else None,
        description=event.description,
    )


def patterns_handler(catalogue: PatternCatalogue) -> Any:
    """Keep the highest version of each pattern (a removal as a tombstone); a pattern that
    cannot be stored (no account, bad name, content not matching its hash or size, too
    large) is dead-lettered."""

    async def handle(events: list[ConsumedEvent[Any]]) -> None:
        for event in events:
            pattern = cleanup_pattern(event.payload)
            problem = pattern.problem()
            if problem:
                raise InvalidEvent(event, problem)
            stored = await catalogue.apply(pattern)
            metrics.PATTERN_UPDATES.labels("stored" if stored else "stale").inc()

    return handle

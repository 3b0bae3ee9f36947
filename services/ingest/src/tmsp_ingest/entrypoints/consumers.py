"""Kafka consumers of the gateway: the accounts projection and incoming mitigation tasks."""

from __future__ import annotations

from typing import Any

from tmsp.events.v1 import accounts_pb2, status_pb2
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_ingest.domain.products import AccountView
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

"""Threat mitigation tasks: a forensic data request or a custom cleanup pattern for one
product, put on the bus ingest hands out in heartbeat answers. Answers only once Kafka
acknowledged the task."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from tmsp.events.v1 import products_pb2, status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import MITIGATION_TASKS
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.domain.validation import task_parameters
from tmsp_reporter.service_layer.ports import Publisher

CLEANUP = status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN
FORENSIC = status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST


class MitigationTasks:
    def __init__(self, read: ReadModel, publisher: Publisher, clock: Clock) -> None:
        self.read = read
        self.publisher = publisher
        self.clock = clock

    async def list(
        self,
        account_id: str,
        product_id: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[tuple[status_pb2.MitigationTask, datetime | None]]:
        """The account's tasks, newest first, each with when its product acknowledged it."""
        return await self.read.list_tasks(account_id, product_id, limit=limit, after=after)

    async def create(
        self,
        account_id: str,
        product_id: str,
        kind: int,
        parameters: Mapping[str, str],
        created_by: str,
    ) -> status_pb2.MitigationTask:
        if kind not in (CLEANUP, FORENSIC):
            raise InvalidArgument("kind", "forensic data request or custom cleanup pattern")
        if not product_id:
            raise InvalidArgument("product_id", "required")
        product = await self.read.product(product_id)
        if product is None or product.account_id != account_id:
            raise NotFound("product not found")
        if product.state in (products_pb2.PRODUCT_STATE_DEREGISTERED,):
            raise FailedPrecondition("the product is deregistered")
        if kind == CLEANUP and product.kind != products_pb2.PRODUCT_KIND_THREAT_MITIGATOR:
            raise FailedPrecondition("custom cleanup patterns go to a Threat Mitigator")
        params = task_parameters(parameters, cleanup=kind == CLEANUP)
        task = status_pb2.MitigationTask(
            task_id=f"task-{uuid.uuid4().hex}",
            account_id=account_id,
            product_id=product_id,
            kind=status_pb2.MitigationTaskKind.ValueType(kind),
            parameters=params,
            created_by_user_id=created_by,
        )
        task.created_at.CopyFrom(to_timestamp(self.clock.now()))
        await self.publisher.publish(
            MITIGATION_TASKS, task, key=product_id, account_id=account_id, event_id=task.task_id
        )
        return task

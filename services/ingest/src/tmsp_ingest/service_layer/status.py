"""Status server use cases: heartbeats and the mitigation tasks handed out with them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tmsp.events.v1 import status_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_ingest.domain.products import Kind, Product
from tmsp_ingest.service_layer.ports import HeartbeatSink, TaskRepository

MAX_TASKS_PER_ANSWER = 20
MAX_COUNTERS = 64


@dataclass(frozen=True)
class HeartbeatReport:
    """What a product says in one heartbeat."""

    product_version: str
    uptime_seconds: int
    security_compliance_enabled: bool | None
    counters: Mapping[str, int]
    acknowledged_task_ids: Sequence[str]


@dataclass(frozen=True)
class HeartbeatAnswer:
    next_interval_seconds: int
    tasks: list[status_pb2.MitigationTask]


class StatusService:
    def __init__(self, sink: HeartbeatSink, tasks: TaskRepository, clock: Clock) -> None:
        self.sink = sink
        self.tasks = tasks
        self.clock = clock

    async def heartbeat(self, product: Product, report: HeartbeatReport) -> HeartbeatAnswer:
        """Acknowledge tasks, publish the heartbeat (after the broker's ack), hand out the
        product's pending tasks."""
        if len(report.counters) > MAX_COUNTERS:
            raise InvalidArgument("counters", f"at most {MAX_COUNTERS}")
        if report.uptime_seconds < 0:
            raise InvalidArgument("uptime_seconds", "must not be negative")
        if len(report.product_version) > 64:
            raise InvalidArgument("product_version", "at most 64 characters")
        acknowledged = [t for t in report.acknowledged_task_ids if isinstance(t, str)][:100]
        await self.tasks.acknowledge(product.product_id, acknowledged)
        event = status_pb2.Heartbeat(
            product_id=product.product_id,
            account_id=product.account_id,
            product_kind=int(product.kind),  # type: ignore[arg-type]
            product_version=report.product_version,
            uptime_seconds=report.uptime_seconds,
            counters=dict(report.counters),
            expected_interval_seconds=product.heartbeat_interval_seconds,
            acknowledged_task_ids=acknowledged,
        )
        if product.kind is Kind.THREAT_DISCOVERY_APPLIANCE and (
            report.security_compliance_enabled is not None
        ):
            event.security_compliance_enabled = report.security_compliance_enabled
        event.received_at.CopyFrom(to_timestamp(self.clock.now()))
        await self.sink.heartbeat(event)
        pending = await self.tasks.pending(product.product_id, MAX_TASKS_PER_ANSWER)
        return HeartbeatAnswer(product.heartbeat_interval_seconds, pending)

"""Helpers shared by the correlator's integration tests and benchmark (no pytest here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tmsp.events.v1 import detections_pb2, products_pb2
from tmsp_common.kafka.envelope import to_timestamp

SEVERITY = {
    "low": detections_pb2.SEVERITY_LOW,
    "medium": detections_pb2.SEVERITY_MEDIUM,
    "high": detections_pb2.SEVERITY_HIGH,
    "critical": detections_pb2.SEVERITY_CRITICAL,
}


def detection(
    event_id: str,
    at: float,
    *,
    account_id: str = "acc1",
    product_id: str = "tda1",
    host: str = "pc1",
    severity: str = "high",
    threat_name: str = "TROJ_TEST",
    category: str = "",
    **extra: Any,
) -> detections_pb2.Detection:
    d = detections_pb2.Detection(
        event_id=event_id,
        account_id=account_id,
        product_id=product_id,
        product_kind=products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
        endpoint=detections_pb2.Endpoint(host=host),
        severity=SEVERITY[severity],
        threat_name=threat_name,
        threat_category=category,
        **extra,
    )
    d.occurred_at.CopyFrom(to_timestamp(datetime.fromtimestamp(at, UTC)))
    return d


def mitigation(
    event_id: str,
    at: float,
    outcome: int,
    *,
    account_id: str = "acc1",
    product_id: str = "tm1",
    host: str = "pc1",
    threat_name: str = "TROJ_TEST",
) -> detections_pb2.MitigationResult:
    m = detections_pb2.MitigationResult(
        event_id=event_id,
        account_id=account_id,
        product_id=product_id,
        endpoint=detections_pb2.Endpoint(host=host),
        threat_name=threat_name,
        outcome=outcome,  # type: ignore[arg-type]
    )
    m.occurred_at.CopyFrom(to_timestamp(datetime.fromtimestamp(at, UTC)))
    return m

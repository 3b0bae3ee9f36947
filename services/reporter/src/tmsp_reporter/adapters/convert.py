"""Between bus protobufs, Mongo documents and read-model types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.events.v1 import accounts_pb2, detections_pb2, incidents_pb2, products_pb2, status_pb2
from tmsp_common.forensics import ForensicFile
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_common.mongo import Document
from tmsp_common.severity import Severity
from tmsp_reporter.domain.model import (
    AccountRow,
    IncidentStatus,
    IncidentView,
    NonconformingRow,
    ProductRow,
    TimelineStep,
)

TDA = products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE


def ts(value: Timestamp, has: bool = True) -> datetime | None:
    """A set timestamp as an aware UTC datetime; None when unset."""
    if not has or (value.seconds == 0 and value.nanos == 0):
        return None
    return from_timestamp(value)


def endpoint_label(ep: detections_pb2.Endpoint) -> str:
    return ep.host or ep.ip or ep.mac or "unknown endpoint"


def account_doc(s: accounts_pb2.AccountSnapshot) -> Document:
    return {
        "_id": s.account_id,
        "name": s.name,
        "name_key": s.name.lower(),
        "company_name": s.company_name,
        "services": list(s.services),
        "managed_by": s.managed_by_email,
        "valid_from": ts(s.valid_from),
        "valid_until": ts(s.valid_until),
        "deleted": s.deleted,
        "time_zone": s.time_zone,
        "version": s.version,
    }


def account_row(d: Document) -> AccountRow:
    return AccountRow(
        account_id=d["_id"],
        name=d.get("name", ""),
        company_name=d.get("company_name", ""),
        services=tuple(d.get("services", ())),
        managed_by=d.get("managed_by", ""),
        valid_from=d.get("valid_from"),
        valid_until=d.get("valid_until"),
        time_zone=d.get("time_zone", ""),
        deleted=bool(d.get("deleted", False)),
        first_seen=d.get("first_seen"),
    )


def product_fields(s: products_pb2.ProductSnapshot) -> Document:
    return {
        "account_id": s.account_id,
        "name": s.name,
        "kind": int(s.kind),
        "state": int(s.state),
        "version": s.version,
    }


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def product_row(d: Document) -> ProductRow:
    """One product from its merged documents (registration, status, liveness)."""
    return ProductRow(
        product_id=d["_id"],
        account_id=d.get("account_id", ""),
        name=d.get("name", ""),
        kind=int(d.get("kind", 0)),
        state=int(d.get("state", 0)),
        liveness=int(d.get("liveness", 0)),
        liveness_since=d.get("liveness_since"),
        last_received=_latest(d.get("last_received"), d.get("last_upload_at")),
        last_heartbeat=d.get("heartbeat_at"),
        security_compliance=d.get("security_compliance"),
        is_discovery_appliance=int(d.get("kind", 0)) == TDA,
    )


def incident_doc(i: incidents_pb2.Incident) -> Document:
    first = ts(i.first_seen) or ts(i.updated_at)
    last = ts(i.last_seen) or first
    return {
        "_id": i.incident_id,
        "account_id": i.account_id,
        "version": i.version,
        "title": i.title,
        "severity": int(i.severity),
        "status": int(i.status),
        "first_seen": first,
        "last_seen": last,
        "pb": i.SerializeToString(),
    }


def incident_proto(d: Document) -> incidents_pb2.Incident:
    msg = incidents_pb2.Incident()
    msg.ParseFromString(bytes(d["pb"]))
    return msg


def incident_view(msg: incidents_pb2.Incident) -> IncidentView:
    first = ts(msg.first_seen) or ts(msg.updated_at)
    last = ts(msg.last_seen) or first
    assert first is not None and last is not None  # noqa: S101 - stored incidents have times
    try:
        severity = Severity(int(msg.severity))
    except ValueError:
        severity = Severity.UNSPECIFIED
    try:
        status = IncidentStatus(int(msg.status))
    except ValueError:
        status = IncidentStatus.UNSPECIFIED
    return IncidentView(
        incident_id=msg.incident_id,
        account_id=msg.account_id,
        title=msg.title or "(untitled incident)",
        severity=severity,
        status=status,
        first_seen=first,
        last_seen=last,
        event_count=msg.event_count,
        endpoints=tuple(endpoint_label(e) for e in msg.endpoints),
        attack_tags=tuple(msg.attack_tags),
        recommended_actions=tuple(msg.recommended_actions),
        rule_ids=tuple(msg.rule_ids),
        timeline=tuple(
            TimelineStep(
                at=ts(t.at),
                event_id=t.event_id,
                rule_id=t.rule_id,
                summary=t.summary,
                endpoint=endpoint_label(t.endpoint) if t.HasField("endpoint") else "",
            )
            for t in msg.timeline
        ),
    )


def nonconforming_doc(n: incidents_pb2.NonconformingEndpoint) -> Document:
    return {
        "_id": f"{n.account_id}/{n.endpoint_key}",
        "account_id": n.account_id,
        "cleared": n.cleared,
        "since": ts(n.since),
        "updated_at": ts(n.updated_at),
        "pb": n.SerializeToString(),
    }


def nonconforming_proto(d: Document) -> incidents_pb2.NonconformingEndpoint:
    msg = incidents_pb2.NonconformingEndpoint()
    msg.ParseFromString(bytes(d["pb"]))
    return msg


REASONS = {
    incidents_pb2.NONCONFORMING_REASON_UNRESOLVED_THREAT: "unresolved threat",
    incidents_pb2.NONCONFORMING_REASON_MITIGATION_FAILED: "mitigation failed",
}


def nonconforming_row(msg: incidents_pb2.NonconformingEndpoint) -> NonconformingRow:
    return NonconformingRow(
        account_id=msg.account_id,
        endpoint=endpoint_label(msg.endpoint) if msg.HasField("endpoint") else msg.endpoint_key,
        threats=tuple(msg.threat_names),
        reason=REASONS.get(msg.reason, "unknown"),
        since=ts(msg.since),
        product_id=msg.product_id,
    )


def forensic_file(c: status_pb2.ForensicDataChunk) -> ForensicFile:
    """The file metadata a chunk repeats (the SHA-256 in lower case)."""
    return ForensicFile(
        upload_id=c.upload_id,
        task_id=c.task_id,
        account_id=c.account_id,
        product_id=c.product_id,
        file_name=c.file_name,
        content_sha256=c.content_sha256.lower(),
        size=c.size,
        count=c.count,
    )


def clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop None values (FerretDB and MongoDB both fine with absent fields)."""
    return {k: v for k, v in doc.items() if v is not None}

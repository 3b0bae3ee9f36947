"""Protobuf events to domain values (the only place that knows both)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.events.v1 import accounts_pb2, incidents_pb2, notifications_pb2
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import AccountProfile, Attachment, Kind, Notification
from tmsp_notifier.domain.policy import MITIGATION_FAILED
from tmsp_notifier.service_layer.events import (
    IncidentView,
    Liveness,
    LivenessView,
    NonconformingView,
)

_PREFIX = "NOTIFICATION_KIND_"


def kind_from_proto(value: int) -> Kind | None:
    """The domain kind of a proto enum value; None for UNSPECIFIED or unknown numbers."""
    try:
        name = notifications_pb2.NotificationKind.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return None
    try:
        return Kind(name.removeprefix(_PREFIX).lower())
    except ValueError:
        return None


def kind_to_proto(kind: Kind) -> notifications_pb2.NotificationKind.ValueType:
    return notifications_pb2.NotificationKind.Value(_PREFIX + kind.value.upper())


def _ts(ts: Timestamp, present: bool = True) -> datetime | None:
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return from_timestamp(ts)


def notification_from_request(
    req: notifications_pb2.NotificationRequest, event_id: str
) -> Notification:
    """Kind must be checked by the caller (``kind_from_proto``)."""
    kind = kind_from_proto(req.kind)
    return Notification(
        notification_id=req.notification_id,
        kind=kind or Kind.DIGEST,
        account_id=req.account_id,
        recipients=tuple(req.recipients),
        params=dict(req.params),
        attachments=tuple(
            Attachment(a.filename, a.content_type, a.content) for a in req.attachments
        ),
        time_zone=req.time_zone,
        source="request",
        source_event_id=event_id,
    )


def account_from_snapshot(s: accounts_pb2.AccountSnapshot) -> AccountProfile:
    return AccountProfile(
        account_id=s.account_id,
        name=s.name,
        company_name=s.company_name,
        managed_by_email=s.managed_by_email,
        time_zone=s.time_zone or "UTC",
        valid_until=_ts(s.valid_until, s.HasField("valid_until")),
        deleted=s.deleted,
        version=s.version,
    )


_OPEN = {
    incidents_pb2.INCIDENT_STATUS_UNSPECIFIED,
    incidents_pb2.INCIDENT_STATUS_NEW,
    incidents_pb2.INCIDENT_STATUS_INVESTIGATING,
}


def _endpoint(e: object) -> str:
    host = getattr(e, "host", "")
    ip = getattr(e, "ip", "")
    return f"{host} ({ip})" if host and ip else host or ip or getattr(e, "mac", "")


def _severity(value: int) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        return Severity.UNSPECIFIED


def incident_view(i: incidents_pb2.Incident) -> IncidentView:
    return IncidentView(
        incident_id=i.incident_id,
        account_id=i.account_id,
        title=i.title,
        severity=Severity(int(i.severity))
        if int(i.severity) in Severity._value2member_map_
        else Severity.UNSPECIFIED,
        first_seen=_ts(i.first_seen),
        last_seen=_ts(i.last_seen),
        event_count=i.event_count,
        endpoints=tuple(_endpoint(e) for e in i.endpoints),
        description=i.description,
        open=i.status in _OPEN,
    )


_LIVENESS = {
    incidents_pb2.PRODUCT_LIVENESS_STATE_ONLINE: Liveness.ONLINE,
    incidents_pb2.PRODUCT_LIVENESS_STATE_OFFLINE: Liveness.OFFLINE,
    incidents_pb2.PRODUCT_LIVENESS_STATE_LOGS_NOT_RECEIVED: Liveness.LOGS_NOT_RECEIVED,
    incidents_pb2.PRODUCT_LIVENESS_STATE_LOGS_RESUMED: Liveness.LOGS_RESUMED,
}


def liveness_view(p: incidents_pb2.ProductLiveness) -> LivenessView | None:
    state = _LIVENESS.get(p.state)
    if state is None:
        return None
    return LivenessView(
        product_id=p.product_id,
        account_id=p.account_id,
        state=state,
        since=_ts(p.since),
        last_heartbeat_at=_ts(p.last_heartbeat_at),
        last_upload_at=_ts(p.last_upload_at),
    )


_REASONS = {
    incidents_pb2.NONCONFORMING_REASON_UNRESOLVED_THREAT: "unresolved threat",
    incidents_pb2.NONCONFORMING_REASON_MITIGATION_FAILED: MITIGATION_FAILED,
}


def nonconforming_view(n: incidents_pb2.NonconformingEndpoint) -> NonconformingView:
    return NonconformingView(
        account_id=n.account_id,
        endpoint_key=n.endpoint_key,
        endpoint=_endpoint(n.endpoint) or n.endpoint_key,
        threat_names=tuple(n.threat_names),
        reason=_REASONS.get(n.reason, "nonconforming"),
        cleared=n.cleared,
        since=_ts(n.since),
        product_id=n.product_id,
    )

"""Bus events (protobuf) to the flat event dicts the rule engine matches, and triage
decisions to status hits."""

from __future__ import annotations

from tmsp.events.v1 import detections_pb2, incidents_pb2, products_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.kafka.envelope import EnvelopeError, epoch_seconds
from tmsp_common.severity import SEVERITY_NAMES
from tmsp_correlator.domain.correlation import Hit, make_status_hit
from tmsp_correlator.domain.fields import Event

_KIND = {
    products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE: "threat_discovery_appliance",
    products_pb2.PRODUCT_KIND_THREAT_MITIGATOR: "threat_mitigator",
}
_OUTCOME = {
    detections_pb2.MITIGATION_OUTCOME_CLEANED: "cleaned",
    detections_pb2.MITIGATION_OUTCOME_FAILED: "failed",
    detections_pb2.MITIGATION_OUTCOME_UNRESOLVED: "unresolved",
}


def _ts(env: Envelope, occurred: float) -> float:
    if occurred > 0:
        return occurred
    return epoch_seconds(env.occurred_at)


def _put(out: Event, key: str, value: str | int) -> None:
    if value not in ("", 0):
        out[key] = value


def detection_event(env: Envelope, d: detections_pb2.Detection) -> Event:
    """A Detection as a flat event (empty fields left out; ``ts`` is event time).

    The hottest function of the match stage: each sub-message is read once, and the
    optional fields go through one loop rather than a call each."""
    out: Event = {
        "event_type": "detection",
        "event_id": d.event_id or env.event_id,
        "account_id": d.account_id or env.account_id,
        "product_id": d.product_id,
        "product_kind": _KIND.get(d.product_kind, "threat_discovery_appliance"),
        "ts": _ts(env, epoch_seconds(d.occurred_at)),
        "severity": SEVERITY_NAMES[d.severity] if d.severity < len(SEVERITY_NAMES) else "",
    }
    src, dst, ep = d.source, d.destination, d.endpoint
    for key, value in (
        ("source_ip", src.address),
        ("source_port", src.port),
        ("source_host", src.host),
        ("destination_ip", dst.address),
        ("destination_port", dst.port),
        ("destination_host", dst.host),
        ("endpoint_host", ep.host),
        ("endpoint_ip", ep.ip),
        ("endpoint_mac", ep.mac),
        ("user", d.user),
        ("threat_name", d.threat_name),
        ("threat_category", d.threat_category),
        ("vendor_severity", d.vendor_severity),
        ("signature_id", d.signature_id),
        ("file_hash", d.file_hash),
        ("url", d.url),
        ("action", d.action),
        ("protocol", d.protocol),
    ):
        if value:  # "" and 0 are protobuf's "not set"
            out[key] = value
    if d.extra:
        for k, v in d.extra.items():
            out[f"extra.{k}"] = v
    return out


STATUS_NAMES: dict[incidents_pb2.IncidentStatus.ValueType, str] = {
    incidents_pb2.INCIDENT_STATUS_NEW: "new",
    incidents_pb2.INCIDENT_STATUS_INVESTIGATING: "investigating",
    incidents_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
    incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE: "false_positive",
}
"""Bus status values, and their names as incident states spell them."""


def status_hit(env: Envelope, ch: incidents_pb2.IncidentStatusChange) -> Hit:
    """A triage decision as a status hit of its incident's group (EnvelopeError if it
    cannot be applied: the agent dead-letters it with that reason)."""
    account_id = ch.account_id or env.account_id
    if env.account_id and ch.account_id and env.account_id != ch.account_id:
        raise EnvelopeError("status change: envelope and change name different accounts")
    missing = [
        name
        for name, value in (
            ("incident_id", ch.incident_id),
            ("account_id", account_id),
            ("group_key", ch.group_key),
        )
        if not value
    ]
    if missing:
        raise EnvelopeError(f"status change without {', '.join(missing)}")
    if not ch.group_key.startswith(f"{account_id}|"):
        raise EnvelopeError("status change: group key of another account")
    status = STATUS_NAMES.get(ch.status)
    if status is None:
        raise EnvelopeError(f"status change to an unknown status ({int(ch.status)})")
    return make_status_hit(
        group_key=ch.group_key,
        incident_id=ch.incident_id,
        account_id=account_id,
        status=status,
        note=ch.note,
        changed_by=ch.changed_by_user_id,
        changed_at=epoch_seconds(ch.requested_at) or epoch_seconds(env.occurred_at),
        change_id=ch.change_id or env.event_id,
    )


def mitigation_event(env: Envelope, m: detections_pb2.MitigationResult) -> Event:
    """A MitigationResult as a flat event (log source: Threat Mitigator, mitigation)."""
    out: Event = {
        "event_type": "mitigation",
        "event_id": m.event_id or env.event_id,
        "account_id": m.account_id or env.account_id,
        "product_id": m.product_id,
        "product_kind": "threat_mitigator",
        "ts": _ts(env, epoch_seconds(m.occurred_at)),
        "outcome": _OUTCOME.get(m.outcome, ""),
    }
    _put(out, "endpoint_host", m.endpoint.host)
    _put(out, "endpoint_ip", m.endpoint.ip)
    _put(out, "endpoint_mac", m.endpoint.mac)
    _put(out, "threat_name", m.threat_name)
    _put(out, "action", m.action)
    return out

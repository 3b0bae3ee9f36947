"""Bus events (protobuf) to the flat event dicts the rule engine matches."""

from __future__ import annotations

from tmsp.events.v1 import detections_pb2, products_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.kafka.envelope import epoch_seconds
from tmsp_common.severity import SEVERITY_NAMES
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

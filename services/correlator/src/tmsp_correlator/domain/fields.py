"""Our flat event schema and its mapping from Sigma field names.

An event (a Detection or a MitigationResult) is flattened into a dict whose keys are the
*backend* field names below. Rules are written with Sigma-style names (``src_ip``,
``Hostname``, ``ThreatName``...); :data:`SIGMA_FIELD_MAPPING` maps them to ours and is
applied to every rule as a pySigma processing pipeline. Names not in the mapping pass
through unchanged, so rules may also use our names directly (and ``extra.<key>``).
"""

from __future__ import annotations

from typing import Any

from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation

from tmsp_common.severity import SEVERITY_NAMES

SIGMA_FIELD_MAPPING: dict[str, str] = {
    "src_ip": "source_ip",
    "SourceIp": "source_ip",
    "src_port": "source_port",
    "SourcePort": "source_port",
    "src_host": "source_host",
    "SourceHostname": "source_host",
    "dst_ip": "destination_ip",
    "DestinationIp": "destination_ip",
    "dst_port": "destination_port",
    "DestinationPort": "destination_port",
    "dst_host": "destination_host",
    "DestinationHostname": "destination_host",
    "Hostname": "endpoint_host",
    "ComputerName": "endpoint_host",
    "host": "endpoint_host",
    "EndpointIp": "endpoint_ip",
    "EndpointMac": "endpoint_mac",
    "User": "user",
    "ThreatName": "threat_name",
    "Category": "threat_category",
    "Severity": "severity",
    "SignatureId": "signature_id",
    "sid": "signature_id",
    "Hashes": "file_hash",
    "Hash": "file_hash",
    "Url": "url",
    "c-uri": "url",
    "Action": "action",
    "Protocol": "protocol",
    "Outcome": "outcome",
    "ProductId": "product_id",
    "ProductKind": "product_kind",
}

PRODUCT_ALIASES: dict[str, str] = {
    "tda": "threat_discovery_appliance",
    "threat_discovery_appliance": "threat_discovery_appliance",
    "tm": "threat_mitigator",
    "threat_mitigator": "threat_mitigator",
    "tmsp": "",
}
"""Sigma ``logsource.product`` values and the ``product_kind`` they select ("" = any)."""

CATEGORY_ALIASES: dict[str, str] = {
    "detection": "detection",
    "ids": "detection",
    "network": "detection",
    "mitigation": "mitigation",
    "mitigation_result": "mitigation",
    "antivirus": "",
}
"""Sigma ``logsource.category`` values and the event type they select ("" = any)."""

SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITY_NAMES)}


def map_field(name: str) -> str:
    """The backend field for a Sigma field name (unmapped names pass through)."""
    return SIGMA_FIELD_MAPPING.get(name, name)


def _mapping() -> dict[str | None, str | list[str]]:
    return dict(SIGMA_FIELD_MAPPING.items())


def field_mapping_pipeline() -> ProcessingPipeline:
    """The pySigma pipeline that renames rule fields to our flat event's keys."""
    return ProcessingPipeline(
        name="tmsp field mapping",
        priority=10,
        items=[
            ProcessingItem(
                identifier="tmsp_field_mapping",
                transformation=FieldMappingTransformation(_mapping()),
            )
        ],
    )


Event = dict[str, Any]
"""A flat event: backend field name -> str | int | float value. ``ts`` is event time (s)."""

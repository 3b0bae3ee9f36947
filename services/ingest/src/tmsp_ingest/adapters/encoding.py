"""Lines of an upload to the exact bytes that go on the bus.

Runs in a worker process when the service has one (a pure function of picklable inputs),
so parsing uses the second core while the event loop talks to Kafka. The envelope's fields
that are the same for every record of an upload are serialised once; protobuf's wire format
lets the per-record part be appended (concatenated messages merge).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tmsp.events.v1 import detections_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.kafka.envelope import SCHEMA_VERSION
from tmsp_ingest.domain.intake import Rejection, UploadContext, normalise_line

DETECTION_TYPE = detections_pb2.Detection.DESCRIPTOR.full_name
MITIGATION_TYPE = detections_pb2.MitigationResult.DESCRIPTOR.full_name


@dataclass
class EncodedChunk:
    """Serialized envelopes per topic, rejections with their headers, counts per format."""

    detections: list[bytes] = field(default_factory=list)
    mitigations: list[bytes] = field(default_factory=list)
    rejections: list[tuple[bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


def _common_prefix(event_type: str, ctx: UploadContext, trace_id: str, producer: str) -> bytes:
    env = Envelope(
        event_type=event_type,
        account_id=ctx.account_id,
        trace_id=trace_id,
        schema_version=SCHEMA_VERSION,
        producer=producer,
    )
    now = time.time()
    env.produced_at.seconds = int(now)
    env.produced_at.nanos = int((now % 1) * 1e9)
    return env.SerializeToString()


def rejection_headers(rej: Rejection, account_id: str) -> list[tuple[str, bytes]]:
    return [
        ("tmsp-product-id", rej.product_id.encode()),
        ("tmsp-account-id", account_id.encode()),
        ("tmsp-file", rej.file_name.encode()),
        ("tmsp-line", str(rej.line).encode()),
        ("tmsp-reason", rej.reason.encode()),
        ("tmsp-format", rej.format_label.encode()),
    ]


def encode_chunk(
    lines: Sequence[bytes], first_line: int, ctx: UploadContext, trace_id: str, producer: str
) -> EncodedChunk:
    """``lines[i]`` is line ``first_line + i``; blank lines are skipped."""
    out = EncodedChunk()
    det_prefix = _common_prefix(DETECTION_TYPE, ctx, trace_id, producer)
    mit_prefix = _common_prefix(MITIGATION_TYPE, ctx, trace_id, producer)
    env = Envelope()
    accepted, rejected = out.accepted, out.rejected
    line_no = first_line - 1
    for line in lines:
        line_no += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        result = normalise_line(line, line_no, ctx)
        if isinstance(result, Rejection):
            out.rejections.append((result.raw, rejection_headers(result, ctx.account_id)))
            rejected[result.format_label] = rejected.get(result.format_label, 0) + 1
            continue
        message, fmt = result
        env.Clear()
        env.event_id = message.event_id
        env.occurred_at.CopyFrom(message.occurred_at)
        env.payload = message.SerializeToString()
        if isinstance(message, detections_pb2.Detection):
            out.detections.append(det_prefix + env.SerializeToString())
        else:
            out.mitigations.append(mit_prefix + env.SerializeToString())
        label = fmt.label
        accepted[label] = accepted.get(label, 0) + 1
    return out

"""From the bytes of one upload to normalised events and rejections.

Format auto-detection is per line (the first bytes decide: ``CEF:``, ``<PRI>1 `` for RFC
5424, ``<PRI>`` otherwise for RFC 3164, ``{`` for EVE or JSON lines, a syslog-less
``... CEF:`` prefix for CEF), unless the upload names its format. Gzip is recognised by
its magic bytes and decompressed with a bound. Every record gets a deterministic event id
(product, file name, line number and content), so a re-upload of the same file yields the same ids.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from tmsp.events.v1 import detections_pb2, products_pb2
from tmsp_ingest.domain.cef import parse_cef
from tmsp_ingest.domain.jsonfmt import parse_json
from tmsp_ingest.domain.records import OUTCOME_WORDS, Fields, Format, InvalidRecord
from tmsp_ingest.domain.syslog import parse_rfc3164, parse_rfc5424

GZIP_MAGIC = b"\x1f\x8b"
RAW_LIMIT = 2048
MAX_LINE_BYTES = 64 * 1024
TMI = products_pb2.PRODUCT_KIND_THREAT_MITIGATOR

FORMAT_NAMES: dict[str, Format] = {
    "cef": Format.CEF,
    "rfc5424": Format.SYSLOG_RFC5424,
    "syslog_rfc5424": Format.SYSLOG_RFC5424,
    "rfc3164": Format.SYSLOG_RFC3164,
    "syslog_rfc3164": Format.SYSLOG_RFC3164,
    "eve": Format.SURICATA_EVE,
    "suricata_eve": Format.SURICATA_EVE,
    "json": Format.JSON_LINES,
    "json_lines": Format.JSON_LINES,
    "jsonl": Format.JSON_LINES,
}


class UploadTooLarge(ValueError):
    """The (decompressed) upload is bigger than allowed."""


@dataclass(frozen=True)
class UploadContext:
    """Who uploaded what, and when it arrived."""

    product_id: str
    account_id: str
    product_kind: int
    file_name: str
    received_at: float
    default_year: int
    forced_format: Format | None = None


@dataclass(frozen=True)
class Rejection:
    """A record that failed: where it was and why. ``raw`` is bounded."""

    product_id: str
    file_name: str
    line: int
    reason: str
    raw: bytes
    format_label: str = "unknown"


def decompress(data: bytes, max_bytes: int) -> bytes:
    """``data`` itself, or its gzip content; UploadTooLarge beyond ``max_bytes``."""
    if not data.startswith(GZIP_MAGIC):
        if len(data) > max_bytes:
            raise UploadTooLarge(f"upload larger than {max_bytes} bytes")
        return data
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidRecord(f"bad gzip data: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise UploadTooLarge(f"decompressed upload larger than {max_bytes} bytes")
    if not inflater.eof:
        raise InvalidRecord("truncated gzip data")
    return out


def detect_format(line: str) -> Format:
    """The format of one line, from its first bytes; InvalidRecord when unknown."""
    first = line[:1]
    if first == "C" and line.startswith("CEF:"):
        return Format.CEF
    if first == "<":
        end = line.find(">", 1, 6)
        if end != -1 and line[end + 1 : end + 3] == "1 ":
            return Format.SYSLOG_RFC5424
        return Format.SYSLOG_RFC3164
    if first == "{":
        return Format.JSON_LINES
    cef_at = line.find("CEF:", 0, 128)
    if cef_at > 0:
        return Format.CEF
    raise InvalidRecord("unknown format")


def parse_line(line: str, fmt: Format, *, default_year: int, now: float) -> Fields:
    """Parse one record known (or forced) to be in ``fmt``."""
    if fmt is Format.CEF:
        at = 0 if line.startswith("CEF:") else line.find("CEF:", 0, 128)
        if at < 0:
            raise InvalidRecord("not a CEF record")
        return parse_cef(line[at:], default_year=default_year, now=now)
    if fmt is Format.SYSLOG_RFC5424:
        return parse_rfc5424(line, default_year=default_year, now=now)
    if fmt is Format.SYSLOG_RFC3164:
        return parse_rfc3164(line, default_year=default_year, now=now)
    fields = parse_json(line)
    if fmt is Format.SURICATA_EVE and fields.format is not Format.SURICATA_EVE:
        raise InvalidRecord("not a Suricata EVE record")
    return fields


def event_id(product_id: str, file_name: str, line_no: int, raw: bytes) -> str:
    """Deterministic: the same line of the same file of the same product, the same id."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(product_id.encode())
    digest.update(b"\0")
    digest.update(file_name.encode())
    digest.update(b"\0%d\0" % line_no)
    digest.update(raw)
    return digest.hexdigest()


def _set_time(ts: object, seconds: float) -> None:
    whole = int(seconds)
    ts.seconds = whole  # type: ignore[attr-defined]  # protobuf Timestamp
    ts.nanos = int(round((seconds - whole) * 1e9)) % 1_000_000_000  # type: ignore[attr-defined]


def _raw_text(text: str) -> tuple[str, bool]:
    if len(text) <= RAW_LIMIT:
        return text, False
    return text[:RAW_LIMIT], True


def build_detection(
    fields: Fields, ctx: UploadContext, line_no: int, raw: bytes, text: str
) -> detections_pb2.Detection:
    raw_text, truncated = _raw_text(text)
    det = detections_pb2.Detection(
        event_id=event_id(ctx.product_id, ctx.file_name, line_no, raw),
        account_id=ctx.account_id,
        product_id=ctx.product_id,
        product_kind=ctx.product_kind,  # type: ignore[arg-type]
        format=int(fields.format),  # type: ignore[arg-type]
        user=fields.user,
        threat_name=fields.threat_name,
        threat_category=fields.category,
        severity=int(fields.level),  # type: ignore[arg-type]
        vendor_severity=fields.vendor_severity,
        signature_id=fields.signature_id,
        file_hash=fields.file_hash,
        url=fields.url,
        action=fields.action,
        protocol=fields.protocol,
        raw=raw_text,
        raw_truncated=truncated,
        extra=fields.extra,
        source_file=ctx.file_name,
        line=line_no,
    )
    if fields.src_addr or fields.src_port or fields.src_host:
        src = det.source
        src.address, src.port, src.host = fields.src_addr, fields.src_port, fields.src_host
    if fields.dst_addr or fields.dst_port or fields.dst_host:
        dst = det.destination
        dst.address, dst.port, dst.host = fields.dst_addr, fields.dst_port, fields.dst_host
    if fields.ep_host or fields.ep_ip or fields.ep_mac:
        ep = det.endpoint
        ep.host, ep.ip, ep.mac = fields.ep_host, fields.ep_ip, fields.ep_mac
    _set_time(
        det.occurred_at, ctx.received_at if fields.occurred_at is None else fields.occurred_at
    )
    _set_time(det.received_at, ctx.received_at)
    return det


def build_mitigation(
    fields: Fields, ctx: UploadContext, line_no: int, raw: bytes, text: str
) -> detections_pb2.MitigationResult:
    word = fields.extra.get("outcome", "")
    outcome = OUTCOME_WORDS.get(word.strip().lower())
    if outcome is None:
        raise InvalidRecord(f"unknown mitigation outcome {word[:40]!r}")
    result = detections_pb2.MitigationResult(
        event_id=event_id(ctx.product_id, ctx.file_name, line_no, raw),
        account_id=ctx.account_id,
        product_id=ctx.product_id,
        threat_name=fields.threat_name,
        action=fields.action,
        outcome=int(outcome),  # type: ignore[arg-type]
        raw=_raw_text(text)[0],
        source_file=ctx.file_name,
        line=line_no,
    )
    ep = result.endpoint
    ep.host, ep.ip, ep.mac = fields.ep_host, fields.ep_ip, fields.ep_mac
    _set_time(
        result.occurred_at, ctx.received_at if fields.occurred_at is None else fields.occurred_at
    )
    _set_time(result.received_at, ctx.received_at)
    return result


Normalised = detections_pb2.Detection | detections_pb2.MitigationResult


def normalise_line(
    raw: bytes, line_no: int, ctx: UploadContext
) -> tuple[Normalised, Format] | Rejection:
    """One line of an upload to its event, or to a rejection saying why not."""
    fmt_label = "unknown"
    try:
        if len(raw) > MAX_LINE_BYTES:
            raise InvalidRecord(f"line longer than {MAX_LINE_BYTES} bytes")
        text = raw.decode("utf-8", errors="replace")
        fmt = ctx.forced_format or detect_format(text)
        fmt_label = fmt.label
        fields = parse_line(text, fmt, default_year=ctx.default_year, now=ctx.received_at)
        fmt_label = fields.format.label
        if ctx.product_kind == TMI and "outcome" in fields.extra:
            return build_mitigation(fields, ctx, line_no, raw, text), fields.format
        return build_detection(fields, ctx, line_no, raw, text), fields.format
    except InvalidRecord as exc:
        return Rejection(
            ctx.product_id, ctx.file_name, line_no, exc.reason, raw[:RAW_LIMIT], fmt_label
        )
    except (ValueError, OverflowError) as exc:
        return Rejection(
            ctx.product_id,
            ctx.file_name,
            line_no,
            f"unparseable record: {type(exc).__name__}",
            raw[:RAW_LIMIT],
            fmt_label,
        )


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end) for every non-blank line."""
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield number, line


def normalise_upload(
    data: bytes, ctx: UploadContext
) -> Iterator[tuple[Normalised, Format] | Rejection]:
    """Every record of an (already decompressed) upload, in order."""
    for number, line in iter_lines(data):
        yield normalise_line(line, number, ctx)

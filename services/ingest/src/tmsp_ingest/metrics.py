"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_ACCEPTED = Counter(
    "tmsp_ingest_records_accepted_total", "Records published", ["format", "protocol"]
)
RECORDS_REJECTED = Counter(
    "tmsp_ingest_records_rejected_total", "Records dead-lettered", ["format", "protocol"]
)
UPLOAD_BYTES = Counter("tmsp_ingest_upload_bytes_total", "Bytes received", ["protocol"])
UPLOAD_SECONDS = Histogram(
    "tmsp_ingest_upload_seconds",
    "From the end of an upload to every record acknowledged",
    ["protocol"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPLOADS = Counter("tmsp_ingest_uploads_total", "Uploads by result", ["protocol", "result"])
AUTH_FAILURES = Counter(
    "tmsp_ingest_auth_failures_total", "Failed product authentications", ["protocol", "reason"]
)
ACTIVE_SESSIONS = Gauge("tmsp_ingest_active_sessions", "Open product sessions", ["protocol"])
HEARTBEATS = Counter("tmsp_ingest_heartbeats_total", "Heartbeats received", ["result"])
BUFFERED_BYTES = Gauge(
    "tmsp_ingest_buffered_upload_bytes", "Bytes of uploads held in memory (bounded)"
)
FORENSIC_UPLOADS = Counter(
    "tmsp_ingest_forensic_uploads_total", "Forensic data uploads by result", ["protocol", "result"]
)
FORENSIC_BYTES = Counter(
    "tmsp_ingest_forensic_bytes_total", "Bytes of forensic data published", ["protocol"]
)
FORENSIC_CHUNKS = Counter(
    "tmsp_ingest_forensic_chunks_total", "Forensic data chunks published", ["protocol"]
)
PATTERN_DOWNLOADS = Counter(
    "tmsp_ingest_pattern_downloads_total",
    "Cleanup pattern downloads by result",
    ["protocol", "result"],
)
PATTERN_UPDATES = Counter(
    "tmsp_ingest_pattern_updates_total",
    "Cleanup patterns from the bus: stored, or stale (a newer version was stored)",
    ["result"],
)

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

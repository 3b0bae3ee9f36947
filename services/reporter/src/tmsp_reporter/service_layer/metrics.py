"""The reporter's Prometheus metrics (Kafka and gRPC ones come from tmsp_common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REPORTS_GENERATED = Counter(
    "tmsp_reporter_reports_generated_total", "Reports generated and stored", ["kind"]
)
REPORT_SECONDS = Histogram(
    "tmsp_reporter_report_generation_seconds",
    "Time to collect, render and store one report",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REPORT_BYTES = Histogram(
    "tmsp_reporter_report_bytes",
    "Size of generated PDFs",
    buckets=(10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 4_000_000, 8_000_000),
)
PURGED = Counter("tmsp_reporter_purged_total", "Documents removed by log maintenance", ["what"])
STATUS_CHANGES = Counter(
    "tmsp_reporter_incident_status_changes_total",
    "Incident status changes (triage) published",
    ["status"],
)

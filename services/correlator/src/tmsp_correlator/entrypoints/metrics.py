"""The correlator's Prometheus metrics (both stages, all agents)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("tmsp_correlator_events_total", "Events matched against the rules", ["topic"])
HITS = Counter("tmsp_correlator_hits_total", "Rule hits sent to the correlation stage")
INCIDENT_WRITES = Counter(
    "tmsp_correlator_incident_writes_total", "Incidents published (new or changed)", ["kind"]
)
STORED = Counter("tmsp_correlator_incidents_stored_total", "Incident versions written to Mongo")
LATE = Counter("tmsp_correlator_late_hits_total", "Hits dead-lettered as too late")
HANDLE_SECONDS = Histogram(
    "tmsp_correlator_handle_seconds",
    "Time to handle one batch (match: detections; correlate: hits records; store: incidents)",
    ["stage"],
)
GROUP_STATES = Gauge(
    "tmsp_correlator_group_states", "Correlation groups whose window state this worker holds"
)
GROUPS_FORGOTTEN = Counter(
    "tmsp_correlator_groups_forgotten_total", "Idle correlation groups whose state was dropped"
)

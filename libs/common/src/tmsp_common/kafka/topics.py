"""The one registry of topics on the bus.

Every topic is declared once here, with its key, protobuf payload type, partition count,
retention or compaction and its dead-letter topic. Services, manifests and tests read it;
nobody types a topic name twice. A deployment-wide prefix (``TMSP_TOPIC_PREFIX``) is
prepended at runtime, which is also how tests isolate themselves on a shared broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

from tmsp.events.v1 import (
    accounts_pb2,
    auth_pb2,
    detections_pb2,
    incidents_pb2,
    maintenance_pb2,
    notifications_pb2,
    products_pb2,
    status_pb2,
)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    """One topic. ``message_type`` is None for raw (dead-letter) topics."""

    name: str
    message_type: type[Message] | None
    key: str
    partitions: int = 3
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS
    description: str = ""
    has_dead_letter: bool = True
    extra_config: dict[str, str] = field(default_factory=dict)

    def qualified(self, prefix: str = "") -> str:
        """The topic's name on the broker under a deployment prefix."""
        return f"{prefix}{self.name}"

    @property
    def dead_letter(self) -> Topic | None:
        """The dead-letter topic for messages of this topic that cannot be handled."""
        if not self.has_dead_letter:
            return None
        return Topic(
            name=f"{self.name}.dlq",
            message_type=None,
            key="original key",
            partitions=1,
            retention_ms=30 * DAY_MS,
            description=f"Dead letters of {self.name}; reason and origin in headers",
            has_dead_letter=False,
        )

    def config(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if not self.compacted:
            cfg["retention.ms"] = str(self.retention_ms)
        else:
            cfg["min.compaction.lag.ms"] = "60000"
        cfg.update(self.extra_config)
        return cfg

    @property
    def type_name(self) -> str:
        return self.message_type.DESCRIPTOR.full_name if self.message_type else ""


ACCOUNTS = Topic(
    "tmsp.accounts.v1",
    accounts_pb2.AccountSnapshot,
    key="account_id",
    compacted=True,
    description="Customer account snapshots from auth, one per change",
)
AUTH_AUDIT = Topic(
    "tmsp.auth.audit.v1",
    auth_pb2.AuthAuditEvent,
    key="user_id",
    retention_ms=90 * DAY_MS,
    description="Security events: logins, lockouts, 2FA changes, codes used, resets",
)
NOTIFICATION_REQUESTS = Topic(
    "tmsp.notifications.requests.v1",
    notifications_pb2.NotificationRequest,
    key="notification_id",
    retention_ms=1 * DAY_MS,
    description="Emails to send (may carry one-time codes: short retention)",
)
PRODUCTS = Topic(
    "tmsp.products.v1",
    products_pb2.ProductSnapshot,
    key="product_id",
    compacted=True,
    description="Registered product (appliance) snapshots from ingest",
)
DETECTIONS = Topic(
    "tmsp.detections.v1",
    detections_pb2.Detection,
    key="product_id",
    partitions=6,
    description="Normalised detections from every log format",
)
MITIGATION_RESULTS = Topic(
    "tmsp.mitigation-results.v1",
    detections_pb2.MitigationResult,
    key="product_id",
    description="Threat Mitigator results: cleaned, failed, unresolved",
)
INGEST_REJECTED = Topic(
    "tmsp.ingest.rejected.v1",
    None,
    key="product_id",
    partitions=1,
    retention_ms=30 * DAY_MS,
    has_dead_letter=False,
    description="Uploaded records that failed to parse: raw bytes, product/file/line/reason",
)
HEARTBEATS = Topic(
    "tmsp.heartbeats.v1",
    status_pb2.Heartbeat,
    key="product_id",
    description="Product heartbeats received by the status server",
)
UPLOADS = Topic(
    "tmsp.uploads.v1",
    status_pb2.UploadReceived,
    key="product_id",
    description="A product finished an upload (Last Received)",
)
MITIGATION_TASKS = Topic(
    "tmsp.mitigation-tasks.v1",
    status_pb2.MitigationTask,
    key="product_id",
    description="Threat mitigation tasks for products, handed out in heartbeat answers",
)
CLEANUP_PATTERNS = Topic(
    "tmsp.cleanup-patterns.v1",
    status_pb2.CleanupPattern,
    key="account_id/name",
    compacted=True,
    description="Custom cleanup pattern catalogue per account (content inline, <=512 KiB)",
)
FORENSIC_DATA = Topic(
    "tmsp.forensic-data.v1",
    status_pb2.ForensicDataChunk,
    key="upload_id",
    retention_ms=14 * DAY_MS,
    description="Forensic data files from products, in chunks of <=256 KiB",
)
LOG_MAINTENANCE = Topic(
    "tmsp.log-maintenance.v1",
    maintenance_pb2.LogMaintenanceSettings,
    key="log-maintenance",
    partitions=1,
    compacted=True,
    description="Log maintenance (retention) settings from the portal; one record",
)
INCIDENTS = Topic(
    "tmsp.incidents.v1",
    incidents_pb2.Incident,
    key="incident_id",
    compacted=True,
    description="Incident upserts from the correlator",
)
INCIDENT_STATUS_CHANGES = Topic(
    "tmsp.incident-status-changes.v1",
    incidents_pb2.IncidentStatusChange,
    key="incident_id",
    description="Triage decisions from the portal (status, note), applied by the correlator",
)
INCIDENT_COUNTS = Topic(
    "tmsp.incident-counts.v1",
    incidents_pb2.IncidentCount,
    key="account_id",
    compacted=True,
    description="Incident count per account, live and the daily 02:00 update",
)
NONCONFORMING_ENDPOINTS = Topic(
    "tmsp.nonconforming-endpoints.v1",
    incidents_pb2.NonconformingEndpoint,
    key="account_id/endpoint_key",
    compacted=True,
    description="Endpoints with unresolved threats or failed mitigation, and their clearing",
)
PRODUCT_LIVENESS = Topic(
    "tmsp.product-liveness.v1",
    incidents_pb2.ProductLiveness,
    key="product_id",
    compacted=True,
    description="Product online/offline and logs-not-received changes",
)

ALL_TOPICS: tuple[Topic, ...] = (
    ACCOUNTS,
    AUTH_AUDIT,
    NOTIFICATION_REQUESTS,
    PRODUCTS,
    DETECTIONS,
    MITIGATION_RESULTS,
    INGEST_REJECTED,
    HEARTBEATS,
    UPLOADS,
    MITIGATION_TASKS,
    CLEANUP_PATTERNS,
    FORENSIC_DATA,
    LOG_MAINTENANCE,
    INCIDENTS,
    INCIDENT_STATUS_CHANGES,
    INCIDENT_COUNTS,
    NONCONFORMING_ENDPOINTS,
    PRODUCT_LIVENESS,
)


def with_dead_letters(topics: tuple[Topic, ...] | list[Topic]) -> list[Topic]:
    """``topics`` followed by their dead-letter topics."""
    out = list(topics)
    out.extend(dlq for t in topics if (dlq := t.dead_letter) is not None)
    return out


def by_name(name: str) -> Topic:
    """The registered topic called ``name`` (without prefix); KeyError if unknown."""
    for topic in with_dead_letters(ALL_TOPICS):
        if topic.name == name:
            return topic
    raise KeyError(name)

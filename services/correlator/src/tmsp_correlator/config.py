"""Settings of the correlator (env prefix ``TMSP_CORRELATOR_``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faust.utils.cron import secs_for_next
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from tmsp_common.settings import ServiceSettings

DEFAULT_RULES_DIR = str(Path(__file__).resolve().parent / "rules")


class CorrelatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_CORRELATOR_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )
    service_name: ClassVar[str] = "correlator"

    app_id: str = Field("tmsp-correlator", pattern=r"^[A-Za-z0-9._-]+$")
    """Faust application id: consumer group and prefix of its internal topics."""
    mongo_database: str = "tmsp_correlator"
    data_dir: str = ""
    """faust's working directory (nothing durable: the window state lives in memory and in
    its changelog topic). Empty: ``<temp dir>/tmsp-correlator/<app id>``, so a read-only
    root filesystem (the Kubernetes manifest) or a shared working directory is no problem."""
    rules_dir: str = DEFAULT_RULES_DIR
    rules_reload_interval_s: float = Field(30.0, ge=0)
    """How often the rules directory is checked for changes (0 = never)."""
    partitions: int = Field(6, ge=1, le=256)
    """Partitions of the hits topic and the window-state table (fixed once created)."""
    allowed_lateness_s: float = Field(3600.0, ge=0)
    standalone_window_s: float = Field(3600.0, gt=0)
    """Window within which repeats of a standalone detection rule update one incident."""
    max_window_events: int = Field(1000, ge=10)
    max_incident_event_ids: int = Field(200, ge=1)
    max_incident_endpoints: int = Field(100, ge=1)
    changelog_segment_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Segment size of the window-state changelog (set when the topic is created). Kafka
    compacts only closed segments and a restarted worker reads the whole changelog: with
    the broker's 1 GiB a restart could read up to 1 GiB of superseded states per partition."""
    group_idle_s: float = Field(8 * 86400.0, gt=0)
    """A correlation group no hit has changed for this long (wall clock) is forgotten: its
    window state leaves memory and, as a tombstone, the table's changelog. Longer than the
    longest upload interval (7 days), so a product's weekly upload still meets its window."""
    group_sweep_interval_s: float = Field(600.0, gt=0)
    """How often each worker looks for idle groups among its partitions."""
    match_batch_max: int = Field(1000, ge=1)
    """Detections per match batch: their hits leave as one record per hits partition."""
    match_batch_s: float = Field(0.02, gt=0)
    """How long a match batch waits to fill."""
    match_processes: int = Field(0, ge=0, le=64)
    """Match processes the worker runs beside itself, each a consumer of the match group
    with a core's worth of Python to itself; 0: the match stage runs in the worker's own
    process. The correlate and store stages stay in the worker."""
    correlate_batch_max: int = Field(200, ge=1)
    """Hits records per correlation batch: incidents changed in a batch are written once,
    and so is a group's window state (a backlog drains in fewer, larger batches)."""
    correlate_batch_s: float = Field(0.05, gt=0)
    """How long a batch waits to fill (the added latency bound)."""
    store_batch_max: int = Field(2000, ge=1)
    """Published incidents per store batch: each incident is written once per batch."""
    store_batch_s: float = Field(0.5, gt=0)
    """How long a store batch waits to fill (how far the stored copy may trail the bus)."""
    producer_linger_s: float = Field(0.005, ge=0)
    """How long the producer waits to batch records into one request."""
    status_store_wait_s: float = Field(10.0, ge=0)
    """How long a status change for an incident its group has left behind waits for the
    stored copy to catch up with the bus before it is dead-lettered."""
    live_count_interval_s: float = Field(1.0, ge=0)
    """At most one live incident count per account this often (0 = after every batch)."""
    time_zone: str = "UTC"
    """IANA time zone of the daily incident count (02:00)."""
    daily_count_cron: str = "0 2 * * *"
    offline_multiple: float = Field(3.0, gt=1)
    default_heartbeat_interval_s: float = Field(300.0, gt=0)
    logs_timeout_s: float = Field(24 * 3600.0, gt=0)
    liveness_check_interval_s: float = Field(30.0, gt=0)
    purge_interval_s: float = Field(3600.0, gt=0)
    """How often the leader applies log maintenance (retention) to the store."""
    web_port: int = Field(0, ge=0, le=65535)
    """Faust's web server port; 0 disables it."""
    replication_factor: int = Field(1, ge=1)
    session_timeout_s: float = Field(30.0, ge=6)
    """Kafka group session timeout: how long a killed worker's partitions wait to move."""

    @property
    def data_path(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir)
        return Path(tempfile.gettempdir()) / "tmsp-correlator" / self.app_id

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("daily_count_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            secs_for_next(value)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"not a crontab expression like '0 2 * * *': {value!r}") from exc
        return value

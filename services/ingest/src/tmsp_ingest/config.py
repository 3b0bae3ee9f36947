"""Settings of the ingest gateway (env prefix ``TMSP_INGEST_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tmsp_common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_INGEST_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )
    service_name: ClassVar[str] = "ingest"

    mongo_database: str = "tmsp_ingest"
    data_dir: str = ".local/ingest"
    """Holds the persistent SSH host key and the SFTP upload directories."""
    bind_host: str = "0.0.0.0"  # noqa: S104 - the gateway faces appliances
    grpc_port: int = Field(50054, ge=0, le=65535)
    grpc_tls: bool = True
    sftp_port: int = Field(2222, ge=0, le=65535)
    https_port: int = Field(8443, ge=0, le=65535)
    status_port: int = Field(8444, ge=0, le=65535)
    syslog_tls_port: int = Field(6514, ge=0, le=65535)
    auth_public_keys: str = ""
    """JSON {kid: PEM} of auth's token signing keys; empty means ask auth's key service."""
    auth_grpc_target: str = "127.0.0.1:50051"
    """auth's gRPC address, for its signing keys when ``auth_public_keys`` is empty."""
    auth_grpc_tls: bool = True
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_forensic_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest forensic data file (SFTP ``forensics/<task>/<file>``, HTTPS
    ``POST /v1/forensic-data``); published in chunks of 256 KiB."""
    max_buffered_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    """Bytes of uploads held in memory at once, all sessions together; beyond it uploads
    wait, then get a retryable error (SFTP failure, HTTPS 503)."""
    max_syslog_frame_bytes: int = Field(64 * 1024, ge=512)
    syslog_batch_lines: int = Field(500, ge=1)
    syslog_batch_seconds: float = Field(0.5, gt=0)
    syslog_standing_recheck_seconds: float = Field(5.0, ge=0)
    """How long an open syslog-over-TLS session may go on publishing after its product lost
    its standing (credentials rotated, disabled, deregistered, account deleted or expired):
    the registry is asked again before a batch at most this often (0: before every batch).
    SFTP sessions ask before every file."""
    credential_cache_seconds: float = Field(60.0, ge=0)
    auth_failure_limit: int = Field(10, ge=1)
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    kafka_request_timeout_ms: int = Field(30_000, ge=1000)
    ack_timeout_seconds: float = Field(30.0, gt=0)
    """How long a client waits for Kafka's acknowledgement before being told to retry."""
    parse_workers: int = Field(1, ge=0, le=16)
    """Worker processes that parse uploads (0: parse on the event loop)."""
    accounts_group: str = "tmsp-ingest-accounts"
    tasks_group: str = "tmsp-ingest-tasks"
    patterns_group: str = "tmsp-ingest-cleanup-patterns"

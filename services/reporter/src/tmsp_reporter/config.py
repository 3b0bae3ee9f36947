"""The reporter's settings (env prefix ``TMSP_REPORTER_``)."""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from tmsp_common.settings import ServiceSettings


class ReporterSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_REPORTER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )
    service_name: ClassVar[str] = "reporter"

    mongo_database: str = Field("tmsp_reporter", min_length=1)
    consumer_group: str = Field("tmsp-reporter", min_length=1)
    grpc_port: int = Field(50055, ge=0, le=65535)
    grpc_tls: bool = True
    auth_public_keys: SecretStr = SecretStr("")
    """JSON ``{kid: PEM}`` of auth's token signing keys; empty means ask auth (auth_target)."""
    auth_target: str = "127.0.0.1:50051"
    auth_tls: bool = True

    portal_url: str = "https://localhost:8443"
    max_report_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    max_attachment_bytes: int = Field(700 * 1024, ge=0, le=900 * 1024)
    """PDFs up to this size are attached to the report-ready mail, larger ones are linked.
    At most 900 KiB: the Kafka record carrying it must stay under the producer's and the
    broker's 1 MB message limit (1.1 MB measured: MessageSizeTooLargeError)."""
    schedule_interval_s: float = Field(60.0, gt=0)
    schedule_delay_hours: float = Field(3.0, ge=0, le=24)
    """Periodic reports are generated this long after their period ended (after the 02:00
    daily incident count)."""
    stale_generation_s: float = Field(600.0, gt=0)
    purge_interval_s: float = Field(3600.0, gt=0)
    pattern_republish_interval_s: float = Field(60.0, gt=0)
    """How often cleanup pattern changes whose publication failed are published again."""
    scheduler_enabled: bool = True

    @field_validator("auth_public_keys")
    @classmethod
    def _keys(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                raise ValueError('JSON object {"kid": "PEM"}') from None
            if not isinstance(data, dict) or not all(isinstance(p, str) for p in data.values()):
                raise ValueError('JSON object {"kid": "PEM"}')
        return v

    @field_validator("portal_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")) or any(c in v for c in "\r\n "):
            raise ValueError("an http(s) URL")
        return v.rstrip("/")

    def public_keys(self) -> dict[str, bytes]:
        raw = self.auth_public_keys.get_secret_value()
        return {k: v.encode() for k, v in json.loads(raw).items()} if raw else {}

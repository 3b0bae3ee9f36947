"""The notifier's settings (env prefix ``TMSP_NOTIFIER_``)."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from tmsp_common.settings import ServiceSettings
from tmsp_notifier.domain.validation import DEFAULT_MAX_ATTACHMENT_BYTES


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_NOTIFIER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )
    service_name: ClassVar[str] = "notifier"

    mongo_database: str = "tmsp_notifier"
    consumer_group: str = "tmsp-notifier"
    grpc_port: int = Field(50056, ge=0, le=65535)
    grpc_tls: bool = True
    auth_public_keys: SecretStr = SecretStr("")
    """JSON ``{kid: PEM}`` of auth's token signing keys; empty means ask auth (auth_target)."""
    auth_target: str = "127.0.0.1:50051"
    """auth's gRPC address, used for signing keys when ``auth_public_keys`` is empty."""
    auth_tls: bool = True

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(2525, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_s: float = Field(10.0, gt=0)
    smtp_validate_certs: bool = True
    smtp_ca_file: str = ""
    smtp_connections: int = Field(4, ge=1, le=64)
    mail_from: str = "TMSP Notifications <notifications@tmsp.local>"

    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    retry_max_transient_replies: int = Field(8, ge=1)
    max_attachment_bytes: int = Field(DEFAULT_MAX_ATTACHMENT_BYTES, ge=0)
    portal_url: str = "https://localhost:8443"
    digest_interval_s: float = Field(30.0, gt=0)
    subscription_check_interval_s: float = Field(3600.0, gt=0)
    subscription_reminder_days: str = "30,7,1"
    delivery_concurrency: int = Field(8, ge=1, le=256)

    @field_validator("subscription_reminder_days")
    @classmethod
    def _days(cls, v: str) -> str:
        days = [int(d) for d in v.split(",") if d.strip()]
        if not days or any(d <= 0 for d in days):
            raise ValueError("a comma-separated list of positive day counts, e.g. 30,7,1")
        return v

    @field_validator("auth_public_keys")
    @classmethod
    def _keys(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if raw:
            data = json.loads(raw)
            if not isinstance(data, dict) or not all(isinstance(p, str) for p in data.values()):
                raise ValueError('JSON object {"kid": "PEM"}')
        return v

    @field_validator("mail_from")
    @classmethod
    def _from(cls, v: str) -> str:
        if "\r" in v or "\n" in v:
            raise ValueError("no CR/LF")
        return v

    def reminder_days(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.subscription_reminder_days.split(",") if d.strip())

    def public_keys(self) -> dict[str, bytes]:
        raw = self.auth_public_keys.get_secret_value()
        return {k: v.encode() for k, v in json.loads(raw).items()} if raw else {}

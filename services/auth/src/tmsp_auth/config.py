"""Settings of the auth service (env prefix ``TMSP_AUTH_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tmsp_auth.domain.passwords import OWASP_MEMORY_KIB
from tmsp_common.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_AUTH_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )
    service_name: ClassVar[str] = "auth"

    mongo_database: str = "tmsp_auth"
    grpc_host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    grpc_port: int = Field(50051, ge=0, le=65535)
    grpc_tls: bool = True

    encryption_keys: SecretStr = SecretStr("")
    """``kid:base64(32 bytes)[,kid:key...]``; first encrypts. Empty: a key file in tls_dir's
    parent (``.local/auth/encryption.key``) is created once, for the local stack only."""

    argon2_memory_kib: int = Field(OWASP_MEMORY_KIB, ge=8)
    argon2_time_cost: int = Field(2, ge=1)
    argon2_parallelism: int = Field(1, ge=1)

    lockout_threshold: int = Field(5, ge=1)
    lockout_minutes: float = Field(15.0, gt=0)
    lockout_max_hours: float = Field(24.0, gt=0)
    lockout_lease_seconds: float = Field(60.0, gt=0)
    """An attempt left unsettled this long (its process died mid-check) counts as failed."""

    access_token_minutes: float = Field(5.0, gt=0)
    refresh_token_days: float = Field(14.0, gt=0)
    signing_key_rotation_days: float = Field(30.0, gt=0)
    challenge_minutes: float = Field(5.0, gt=0)
    reset_token_minutes: float = Field(30.0, gt=0)
    invite_token_hours: float = Field(72.0, gt=0)
    code_minutes: float = Field(10.0, gt=0)
    code_resend_seconds: float = Field(60.0, ge=0)

    emergency_codes_enabled: bool = True
    """Email as a fallback factor (the seed asks for it; ASVS L3 discourages it)."""

    totp_issuer: str = "TMSP"
    reset_url_base: str = "https://portal.tmsp.local/reset-password?token="
    recovery_code_count: int = Field(10, ge=1, le=20)

    security_events_group: str = "tmsp-auth-security-events"
    """Consumer group storing auth's own audit topic for ``ListSecurityEvents``."""
    security_event_retention_days: int = Field(90, ge=1, le=3650)
    """Security events older than this leave ``ListSecurityEvents`` (the topic keeps 90 d)."""

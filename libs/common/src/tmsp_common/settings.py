"""Typed settings: one pydantic-settings class per service, env prefix ``TMSP_<SERVICE>_``.

Settings every service shares (where Kafka and MongoDB are, the topic prefix, logging) are
read from fixed names (``TMSP_KAFKA_BOOTSTRAP``, ``TMSP_MONGO_URL``...), so one environment
configures the whole stack. A bad value stops the service with one line naming the variable
(see :func:`load_settings`).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_MONGO_URL = "mongodb://127.0.0.1:37017/"


def _shared(name: str) -> Any:
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Base of every service's settings. Subclasses set ``service_name`` and ``env_prefix``."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, validate_default=True
    )
    service_name: ClassVar[str] = "tmsp"

    kafka_bootstrap: str = Field(
        DEFAULT_KAFKA_BOOTSTRAP, validation_alias=_shared("TMSP_KAFKA_BOOTSTRAP"), min_length=1
    )
    mongo_url: SecretStr = Field(
        SecretStr(DEFAULT_MONGO_URL), validation_alias=_shared("TMSP_MONGO_URL")
    )
    topic_prefix: str = Field(
        "", validation_alias=_shared("TMSP_TOPIC_PREFIX"), pattern=r"^[A-Za-z0-9._-]*$"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_shared("TMSP_LOG_LEVEL")
    )
    log_format: Literal["json", "console"] = Field(
        "json", validation_alias=_shared("TMSP_LOG_FORMAT")
    )
    tls_dir: str = Field(".local/tls", validation_alias=_shared("TMSP_TLS_DIR"))
    metrics_port: int = Field(0, ge=0, le=65535)
    """Prometheus endpoint port; 0 disables it (tests), the manifests set one per service."""

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        if field not in cls.model_fields and field.upper() == field:
            return field  # pydantic reports aliased fields by their alias
        info = cls.model_fields.get(field)
        alias = info.validation_alias if info else None
        if isinstance(alias, AliasChoices):
            first = alias.choices[0]
            if isinstance(first, str):
                return first
        if isinstance(alias, str):
            return alias
        prefix = str(cls.model_config.get("env_prefix", ""))
        return f"{prefix}{field}".upper()


S = TypeVar("S", bound=ServiceSettings)


def describe_error(cls: type[ServiceSettings], exc: ValidationError) -> str:
    """One line naming the first bad variable and why it is bad."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    return f"tmsp-{cls.service_name}: bad setting {cls.env_name(field)}: {first['msg']}"


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; on a bad value print one line and exit with 2."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        print(describe_error(cls, exc), file=sys.stderr)
        raise SystemExit(2) from None

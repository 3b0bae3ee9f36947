"""Where the client connects and keeps its session, from the environment the services use.

Precedence, for each target and the TLS directory: a command-line option, then the
environment variable, then what the saved session was made with, then the local stack's
default. The session remembers its targets because its refresh token is only good at the
auth service that issued it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_TARGET = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


class ClientSettings(BaseSettings):
    """The client's settings; each field is read from one fixed variable name."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    auth_target: str = Field("127.0.0.1:50051", validation_alias=AliasChoices("TMSP_AUTH_TARGET"))
    portal_target: str = Field(
        "127.0.0.1:50055",
        validation_alias=AliasChoices("TMSP_REPORTER_TARGET"),
    )
    ingest_target: str = Field(
        "127.0.0.1:50054",
        validation_alias=AliasChoices("TMSP_INGEST_TARGET"),
    )
    notifier_target: str = Field(
        "127.0.0.1:50056",
        validation_alias=AliasChoices("TMSP_NOTIFIER_TARGET"),
    )
    tls_dir: str = Field(".local/tls", validation_alias=AliasChoices("TMSP_TLS_DIR"), min_length=1)
    config_dir: str = Field("", validation_alias=AliasChoices("TMSP_CLIENT_CONFIG_DIR"))
    """Where the session file lives; empty: ``$XDG_CONFIG_HOME/tmsp`` or ``~/.config/tmsp``."""

    @field_validator("auth_target", "portal_target", "ingest_target", "notifier_target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not _TARGET.match(value):
            raise ValueError("expected host:port")
        return value

    def explicit(self, field: str) -> str | None:
        """The field's value when the environment set it, else None."""
        return str(getattr(self, field)) if field in self.model_fields_set else None


class BadSetting(Exception):
    """A setting has a bad value: one line naming the variable (or option)."""


OPTIONS = {
    "TMSP_AUTH_TARGET": "--auth",
    "TMSP_REPORTER_TARGET": "--portal",
    "TMSP_INGEST_TARGET": "--ingest",
    "TMSP_NOTIFIER_TARGET": "--notifier",
    "TMSP_TLS_DIR": "--tls-dir",
}
"""Each connection setting's variable and the option that overrides it."""


def load(options: dict[str, str | None] | None = None) -> ClientSettings:
    """Settings from the environment; ``options`` (variable name -> value, None: not given)
    take precedence and count as explicitly set. Raises BadSetting naming what is bad."""
    given: dict[str, Any] = {k: v for k, v in (options or {}).items() if v is not None}
    try:
        return ClientSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        if name in given:
            name = OPTIONS.get(name, name)
        raise BadSetting(f"bad setting {name}: {first['msg']}") from None


def config_dir(settings: ClientSettings) -> Path:
    """``$TMSP_CLIENT_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/tmsp``, else ``~/.config/tmsp``."""
    if settings.config_dir:
        return Path(settings.config_dir)
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "tmsp"

"""Jinja2 templates (package data), one per kind: subject, plain text and HTML.

Each kind declares the parameters its templates may see; anything else a producer sends is
dropped, so a code or a reset link can only reach the body of the one kind that needs it.
Subjects are rendered without any secret parameter at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

from tmsp_common.errors import InvalidArgument
from tmsp_notifier.domain.model import Kind
from tmsp_notifier.domain.policy import format_local
from tmsp_notifier.domain.validation import validate_subject

SECRET_PARAMS = frozenset({"code", "reset_url", "token", "download_url"})
"""Never in a subject (a report link may carry a download token)."""
# The parameter names auth sends (tmsp_auth.service_layer.auth, see notifications.proto).
_CHANGED = ("user_name", "changed_at")
_USED = ("user_name", "used_at", "source_ip")
ALLOWED_PARAMS: dict[Kind, frozenset[str]] = {
    Kind.CONFIRMATION_CODE: frozenset({"code", "user_name", "expires_minutes"}),
    Kind.EMERGENCY_CODE: frozenset({"code", "user_name", "expires_minutes"}),
    Kind.PASSWORD_RESET: frozenset({"reset_url", "user_name", "expires_minutes", "invite"}),
    Kind.ACCOUNT_LOCKED: frozenset({"user_name", "locked_until", "locked_minutes"}),
    Kind.TWO_FACTOR_ENABLED: frozenset(_CHANGED),
    Kind.TWO_FACTOR_DISABLED: frozenset(_CHANGED),
    Kind.TWO_FACTOR_DEVICE_CHANGED: frozenset(_CHANGED),
    Kind.EMERGENCY_CODE_USED: frozenset(_USED),
    Kind.RECOVERY_CODE_USED: frozenset({*_USED, "recovery_codes_left"}),
    Kind.REPORT_READY: frozenset({"report_name", "period", "download_url", "attached"}),
    Kind.INCIDENT: frozenset(
        {
            "incident_id",
            "title",
            "severity",
            "first_seen",
            "last_seen",
            "event_count",
            "endpoints",
            "description",
            "escalated",
        }
    ),
    Kind.PRODUCT_OFFLINE: frozenset({"product_id", "since", "last_heartbeat_at", "last_upload_at"}),
    Kind.PRODUCT_ONLINE: frozenset({"product_id", "since", "last_heartbeat_at", "last_upload_at"}),
    Kind.LOGS_NOT_RECEIVED: frozenset(
        {"product_id", "since", "last_heartbeat_at", "last_upload_at"}
    ),
    Kind.NONCONFORMING_ENDPOINT: frozenset(
        {"endpoint", "threat_names", "reason", "since", "product_id"}
    ),
    Kind.SUBSCRIPTION_EXPIRING: frozenset({"valid_until", "days_left"}),
    Kind.DIGEST: frozenset({"kind_label", "limit", "window_from", "window_to"}),
}
REQUIRED_PARAMS: dict[Kind, frozenset[str]] = {
    Kind.CONFIRMATION_CODE: frozenset({"code"}),
    Kind.EMERGENCY_CODE: frozenset({"code"}),
    Kind.PASSWORD_RESET: frozenset({"reset_url"}),
}
IN_USE = "in_use"
"""``invite`` of a password_reset that carries no link: auth's invitation of an address that
already signs in to another account (see ``tmsp_auth.service_layer.auth``)."""


def required_params(kind: Kind, params: Mapping[str, str]) -> frozenset[str]:
    if kind is Kind.PASSWORD_RESET and params.get("invite") == IN_USE:
        return frozenset()
    return REQUIRED_PARAMS.get(kind, frozenset())


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    """Renders the templates shipped in ``tmsp_notifier/templates``."""

    def __init__(self, portal_url: str = "https://localhost:8443") -> None:
        self.portal_url = portal_url
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("tmsp_notifier", "templates"),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        for kind in Kind:
            for part in ("subject", "txt", "html"):
                self._env.get_template(f"{kind.value}.{part}")  # fail fast if one is missing

    def render(
        self,
        kind: Kind,
        params: Mapping[str, str],
        *,
        time_zone: str = "UTC",
        account_name: str = "",
        items: list[str] | None = None,
    ) -> RenderedEmail:
        """Render one kind; InvalidArgument when a required parameter is missing."""
        allowed = ALLOWED_PARAMS[kind]
        missing = sorted(p for p in required_params(kind, params) if not params.get(p))
        if missing:
            raise InvalidArgument("params", f"{kind.value} needs {', '.join(missing)}")
        body_ctx: dict[str, Any] = dict.fromkeys(allowed, "")
        body_ctx.update({k: v for k, v in params.items() if k in allowed})
        body_ctx.update(
            account_name=account_name, portal_url=self.portal_url, items=list(items or [])
        )
        subject_ctx = {k: v for k, v in body_ctx.items() if k not in SECRET_PARAMS}

        def localtime(value: str) -> str:
            try:
                return format_local(datetime.fromisoformat(value), time_zone)
            except (TypeError, ValueError):
                return str(value)

        self._env.filters["localtime"] = localtime
        try:
            raw_subject = self._env.get_template(f"{kind.value}.subject").render(subject_ctx)
            subject = validate_subject(raw_subject.rstrip("\n"))
            body_ctx["subject"] = subject
            text = self._env.get_template(f"{kind.value}.txt").render(body_ctx)
            html = self._env.get_template(f"{kind.value}.html").render(body_ctx)
        except jinja2.TemplateError as exc:
            raise InvalidArgument("params", f"cannot render {kind.value}: {exc}") from exc
        return RenderedEmail(subject, text, html)

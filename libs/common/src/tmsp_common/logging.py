"""Structured JSON logs (structlog) with the service name, trace id and account id.

Bind request-scoped values with :func:`bind_context`; they flow through contextvars into
every line logged inside that task. Keys that look like secrets are redacted whatever the
caller passes, as a second line of defence (codes and passwords are never logged on purpose).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"(password|secret|token|code|otp|credential|authorization)", re.I)
_ALLOWED = {"status_code", "error_code", "code_kind", "exit_code"}
REDACTED = "[redacted]"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of every secret-looking key (``password``, ``code``...)."""
    for key in list(event_dict):
        if key != "event" and key not in _ALLOWED and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write (not at configuration)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger (aiokafka, grpc, faust) once."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message") if fmt == "json" else _identity,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]  # a TextIO duck
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level == "INFO" else level)


def _identity(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict


def bind_context(**values: Any) -> None:
    """Bind ``trace_id``, ``account_id``... for the rest of the current task."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v})


def clear_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)

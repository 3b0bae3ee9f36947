"""Domain errors shared by every service.

Use cases raise these; one place (``tmsp_common.grpc_server``) maps them to gRPC status
codes, so servicers never choose a status themselves.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error a use case raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Input failed validation; ``field`` names the offending field. Nothing was changed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(DomainError):
    """Unknown resource, or one of another tenant (never reveal which)."""


class AlreadyExists(DomainError):
    """A resource with the same natural key exists."""


class Unauthenticated(DomainError):
    """Missing, invalid or expired credentials."""


class PermissionDenied(DomainError):
    """Authenticated, but the role does not allow the operation."""


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""


class RateLimited(DomainError):
    """Too many attempts (lockout, throttling); retry after ``retry_after_seconds``."""

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    """A dependency (Kafka, the database) is unavailable; the caller may retry."""

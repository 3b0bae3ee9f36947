"""Incident and detection severity, one scale for every service.

The numbers are those of ``tmsp.events.v1.Severity`` (events carry the number); rules and
documents carry the lower-case name.
"""

from __future__ import annotations

from enum import IntEnum


class Severity(IntEnum):
    """Same numbers as ``tmsp.events.v1.Severity``; ordered, so ``>=`` compares levels."""

    UNSPECIFIED = 0
    INFORMATIONAL = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @property
    def label(self) -> str:
        """How a person reads it: "High"."""
        return self.name.capitalize()


SEVERITY_NAMES: tuple[str, ...] = tuple(s.name.lower() for s in Severity)
"""The lower-case names in rank order ("unspecified" ... "critical")."""

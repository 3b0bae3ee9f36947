"""What every parser produces: the fields of one record before it becomes a protobuf.

Parsers are pure functions from one line of text to :class:`Fields` or
:class:`InvalidRecord`; nothing here knows about files, products or the bus.
"""

from __future__ import annotations

from enum import IntEnum

from tmsp_common.severity import Severity


class InvalidRecord(ValueError):
    """A record that cannot be parsed; ``reason`` is short, stable and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Format(IntEnum):
    """Input formats; values equal ``tmsp.events.v1.LogFormat``."""

    CEF = 1
    SYSLOG_RFC5424 = 2
    SYSLOG_RFC3164 = 3
    SURICATA_EVE = 4
    JSON_LINES = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class Outcome(IntEnum):
    """Threat Mitigator outcomes; values equal ``tmsp.events.v1.MitigationOutcome``."""

    UNSPECIFIED = 0
    CLEANED = 1
    FAILED = 2
    UNRESOLVED = 3


OUTCOME_WORDS: dict[str, Outcome] = {
    "cleaned": Outcome.CLEANED,
    "clean": Outcome.CLEANED,
    "success": Outcome.CLEANED,
    "succeeded": Outcome.CLEANED,
    "removed": Outcome.CLEANED,
    "quarantined": Outcome.CLEANED,
    "failed": Outcome.FAILED,
    "failure": Outcome.FAILED,
    "error": Outcome.FAILED,
    "unresolved": Outcome.UNRESOLVED,
    "pending": Outcome.UNRESOLVED,
    "unknown": Outcome.UNRESOLVED,
}


def parse_outcome(value: str) -> Outcome:
    """Map a mitigation result word to an outcome; InvalidRecord for an unknown one."""
    outcome = OUTCOME_WORDS.get(value.strip().lower())
    if outcome is None:
        raise InvalidRecord(f"unknown mitigation outcome {value[:40]!r}")
    return outcome


class Fields:
    """The normalised fields of one record (strings empty when absent).

    A plain ``__slots__`` class rather than a dataclass: one is built per record on the hot
    path, and attribute assignment on slots is the cheapest Python offers.
    """

    __slots__ = (
        "action",
        "category",
        "dst_addr",
        "dst_host",
        "dst_port",
        "ep_host",
        "ep_ip",
        "ep_mac",
        "extra",
        "file_hash",
        "format",
        "level",
        "occurred_at",
        "outcome",
        "protocol",
        "signature_id",
        "src_addr",
        "src_host",
        "src_port",
        "threat_name",
        "url",
        "user",
        "vendor_severity",
    )

    def __init__(self, fmt: Format) -> None:
        self.format = fmt
        self.occurred_at: float | None = None
        """Seconds since the epoch (UTC), when the record says."""
        self.src_addr = ""
        self.src_port = 0
        self.src_host = ""
        self.dst_addr = ""
        self.dst_port = 0
        self.dst_host = ""
        self.ep_host = ""
        self.ep_ip = ""
        self.ep_mac = ""
        self.user = ""
        self.threat_name = ""
        self.category = ""
        self.level = Severity.UNSPECIFIED
        self.vendor_severity = ""
        self.signature_id = ""
        self.file_hash = ""
        self.url = ""
        self.action = ""
        self.protocol = ""
        self.outcome = Outcome.UNSPECIFIED
        self.extra: dict[str, str] = {}


def port(value: str) -> int:
    """A TCP/UDP port; InvalidRecord when not 0-65535."""
    if not value:
        return 0
    if not value.isdigit() or len(value) > 5:
        raise InvalidRecord(f"bad port {value[:20]!r}")
    number = int(value)
    if number > 65535:
        raise InvalidRecord(f"bad port {value[:20]!r}")
    return number


# Common field names (CEF extension keys, structured-data params, JSON keys) -> Fields slot.
KNOWN_KEYS: dict[str, str] = {
    "src": "src_addr",
    "src_ip": "src_addr",
    "source_address": "src_addr",
    "spt": "src_port",
    "src_port": "src_port",
    "shost": "src_host",
    "src_host": "src_host",
    "dst": "dst_addr",
    "dest_ip": "dst_addr",
    "dst_ip": "dst_addr",
    "dpt": "dst_port",
    "dest_port": "dst_port",
    "dst_port": "dst_port",
    "dhost": "dst_host",
    "dst_host": "dst_host",
    "suser": "user",
    "duser": "user",
    "user": "user",
    "cat": "category",
    "category": "category",
    "threat_category": "category",
    "act": "action",
    "action": "action",
    "request": "url",
    "url": "url",
    "fileHash": "file_hash",
    "file_hash": "file_hash",
    "sha256": "file_hash",
    "proto": "protocol",
    "protocol": "protocol",
    "smac": "ep_mac",
    "endpoint_mac": "ep_mac",
    "endpoint_host": "ep_host",
    "endpoint_ip": "ep_ip",
    "threat_name": "threat_name",
    "signature_id": "signature_id",
}
PORT_SLOTS = frozenset({"src_port", "dst_port"})


def apply_known(fields: Fields, key: str, value: str) -> bool:
    """Store ``value`` in the slot ``key`` names; False when the key has no slot."""
    slot = KNOWN_KEYS.get(key)
    if slot is None:
        return False
    if slot in PORT_SLOTS:
        setattr(fields, slot, port(value))
    else:
        setattr(fields, slot, value)
    return True

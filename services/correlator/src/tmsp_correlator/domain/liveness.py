"""Product liveness: online/offline from heartbeats, logs-not-received from uploads.

A product is *offline* once no heartbeat arrived for ``offline_multiple`` times its
expected heartbeat interval, and *online* again with the next heartbeat. Logs are *not
received* once no upload finished for ``logs_timeout_s`` (or, when the product's upload
frequency is known, ``offline_multiple`` times it if that is longer); the next upload
*resumes* them. Transitions are computed here; the caller stores them with a
compare-and-set and publishes each one once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ONLINE = "online"
OFFLINE = "offline"
LOGS_NOT_RECEIVED = "logs_not_received"
LOGS_RESUMED = "logs_resumed"


@dataclass(frozen=True)
class LivenessPolicy:
    offline_multiple: float = 3.0
    default_heartbeat_interval_s: float = 300.0
    logs_timeout_s: float = 24 * 3600.0


def heartbeat_deadline(doc: dict[str, Any], policy: LivenessPolicy) -> float | None:
    last = doc.get("last_heartbeat_at")
    if last is None:
        return None
    interval = float(doc.get("heartbeat_interval_s") or policy.default_heartbeat_interval_s)
    return float(last) + policy.offline_multiple * interval


def logs_deadline(doc: dict[str, Any], policy: LivenessPolicy) -> float | None:
    last = doc.get("last_upload_at")
    if last is None:
        return None
    freq = float(doc.get("upload_frequency_s") or 0)
    return float(last) + max(policy.logs_timeout_s, policy.offline_multiple * freq)


def due_transitions(doc: dict[str, Any], now: float, policy: LivenessPolicy) -> list[str]:
    """The timer's transitions for one product document at ``now``."""
    out: list[str] = []
    if doc.get("deregistered"):
        return out
    hb = heartbeat_deadline(doc, policy)
    if hb is not None and now > hb and doc.get("state") != OFFLINE:
        out.append(OFFLINE)
    logs = logs_deadline(doc, policy)
    if logs is not None and now > logs and not doc.get("logs_missing"):
        out.append(LOGS_NOT_RECEIVED)
    return out

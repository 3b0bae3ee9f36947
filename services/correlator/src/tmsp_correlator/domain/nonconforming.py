"""Nonconforming endpoints (seed 001): endpoints with unresolved threats or failed mitigation.

Threat Mitigator reports one result per threat and endpoint. A ``failed`` or ``unresolved``
result makes the endpoint nonconforming for that threat; a later ``cleaned`` result for the
same threat clears it, and the endpoint is cleared once no threat is left. Results are
applied in event time: an older result never overrides a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASON_UNRESOLVED = "unresolved_threat"
REASON_FAILED = "mitigation_failed"


def endpoint_key(host: str, ip: str, mac: str) -> str:
    """A stable key for an endpoint: host name, else MAC, else IP (lower-cased)."""
    for part, label in ((host, "host"), (mac, "mac"), (ip, "ip")):
        if part:
            return f"{label}:{part.lower()}"
    return ""


@dataclass(frozen=True)
class MitigationFact:
    """One Threat Mitigator result, flattened."""

    account_id: str
    product_id: str
    endpoint: tuple[str, str, str]
    threat_name: str
    outcome: str
    """"cleaned" / "failed" / "unresolved"."""
    ts: float


def apply_result(state: dict[str, Any] | None, fact: MitigationFact) -> tuple[dict[str, Any], bool]:
    """The endpoint's new state and whether its published view changed.

    State: ``threats`` {threat name -> {"outcome", "ts"}} for open threats, ``seen``
    {threat -> newest ts applied}, ``since`` (when it became nonconforming), ``cleared``.
    """
    st: dict[str, Any] = (
        dict(state)
        if state
        else {"threats": {}, "seen": {}, "since": None, "cleared": True, "updated": None}
    )
    st["threats"] = dict(st["threats"])
    st["seen"] = dict(st["seen"])
    threat = fact.threat_name or "(unnamed threat)"
    last = st["seen"].get(threat)
    if last is not None and fact.ts < last:
        return st, False
    st["seen"][threat] = fact.ts
    before = (sorted(st["threats"].items()), st["cleared"])
    if fact.outcome in ("failed", "unresolved"):
        st["threats"][threat] = {"outcome": fact.outcome, "ts": fact.ts}
    elif fact.outcome == "cleaned":
        st["threats"].pop(threat, None)
    else:
        return st, False
    st["cleared"] = not st["threats"]
    if st["cleared"]:
        st["since"] = None
    elif st["since"] is None:
        st["since"] = fact.ts
    st["updated"] = fact.ts
    st["account_id"] = fact.account_id
    st["product_id"] = fact.product_id
    st["endpoint"] = list(fact.endpoint)
    after = (sorted(st["threats"].items()), st["cleared"])
    return st, before != after


def reason(state: dict[str, Any]) -> str:
    """Failed mitigation outranks an unresolved threat."""
    outcomes = {t["outcome"] for t in state["threats"].values()}
    return REASON_FAILED if "failed" in outcomes else REASON_UNRESOLVED

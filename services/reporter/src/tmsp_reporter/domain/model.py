"""Read-model types: what the portal shows, independent of Mongo and protobuf."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum

from tmsp_common.severity import Severity


class IncidentStatus(IntEnum):
    """Same numbers as ``tmsp.events.v1.IncidentStatus``."""

    UNSPECIFIED = 0
    NEW = 1
    INVESTIGATING = 2
    RESOLVED = 3
    FALSE_POSITIVE = 4

    @property
    def is_open(self) -> bool:
        return self in (IncidentStatus.NEW, IncidentStatus.INVESTIGATING)


class Compliance(StrEnum):
    UNKNOWN = "unknown"
    ENABLED = "enabled"
    DISABLED = "disabled"
    PARTIAL = "partial"


def account_compliance(per_appliance: Iterable[bool | None]) -> Compliance:
    """Security Compliance of an account from its Threat Discovery Appliances' heartbeats."""
    seen = {v for v in per_appliance if v is not None}
    if not seen:
        return Compliance.UNKNOWN
    if seen == {True}:
        return Compliance.ENABLED
    if seen == {False}:
        return Compliance.DISABLED
    return Compliance.PARTIAL


@dataclass(frozen=True)
class AccountRow:
    account_id: str
    name: str
    company_name: str
    services: tuple[str, ...]
    managed_by: str
    valid_from: datetime | None
    valid_until: datetime | None
    time_zone: str
    deleted: bool
    first_seen: datetime | None = None
    """When the read model first heard of the account (periodic reports start after it)."""


class ProductState(IntEnum):
    """Same numbers as ``tmsp.events.v1.ProductState``."""

    UNSPECIFIED = 0
    ACTIVE = 1
    DISABLED = 2
    DEREGISTERED = 3


@dataclass(frozen=True)
class ProductRow:
    product_id: str
    account_id: str
    name: str
    kind: int
    state: int
    liveness: int
    liveness_since: datetime | None
    last_received: datetime | None
    last_heartbeat: datetime | None
    security_compliance: bool | None
    is_discovery_appliance: bool

    @property
    def registered(self) -> bool:
        """False once deregistered (for good: it sends no heartbeats or logs any more).

        A product whose registration has not arrived yet (state unspecified) counts."""
        return self.state != ProductState.DEREGISTERED


@dataclass(frozen=True)
class AccountProducts:
    """What the Customer Accounts screen and the reports say about an account's products."""

    registered: tuple[ProductRow, ...]
    compliance: Compliance
    last_received: datetime | None


def account_products(products: Iterable[ProductRow]) -> AccountProducts:
    """The account's registered products, their Security Compliance and last upload.

    Deregistered products are left out: the screen shows "the registered products assigned
    to the account" and Security Compliance is updated by heartbeats, which a deregistered
    appliance no longer sends (its last value would otherwise pin the account for good)."""
    registered = tuple(p for p in products if p.registered)
    received = [p.last_received for p in registered if p.last_received is not None]
    return AccountProducts(
        registered=registered,
        compliance=account_compliance(
            p.security_compliance for p in registered if p.is_discovery_appliance
        ),
        last_received=max(received, default=None),
    )


@dataclass(frozen=True)
class IncidentCountRow:
    open_incidents: int
    total_incidents: int
    as_of: datetime | None


@dataclass(frozen=True)
class AccountScreenRow:
    """One row of the Customer Accounts screen."""

    account: AccountRow
    incidents: IncidentCountRow | None
    live: IncidentCountRow | None
    last_received: datetime | None
    compliance: Compliance
    product_count: int
    nonconforming: int


@dataclass(frozen=True)
class TimelineStep:
    at: datetime | None
    event_id: str
    rule_id: str
    summary: str
    endpoint: str


@dataclass(frozen=True)
class IncidentView:
    incident_id: str
    account_id: str
    title: str
    severity: Severity
    status: IncidentStatus
    first_seen: datetime
    last_seen: datetime
    event_count: int
    endpoints: tuple[str, ...] = ()
    attack_tags: tuple[str, ...] = ()
    recommended_actions: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    timeline: tuple[TimelineStep, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class NonconformingRow:
    account_id: str
    endpoint: str
    threats: tuple[str, ...]
    reason: str
    since: datetime | None
    product_id: str


@dataclass(frozen=True)
class ReportSchedule:
    account_id: str
    daily_administrative: bool = True
    weekly_executive: bool = True
    monthly_executive: bool = True
    time_zone: str = ""

"""Registered products (appliances), the accounts they belong to, and the rules between them.

Pure: no storage, no clock of its own (times are passed in), no hashing library (a
:class:`PasswordHasher` is injected).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum
from typing import Protocol, TypeVar

from tmsp_common.email import address_key, bare_address
from tmsp_common.errors import FailedPrecondition, InvalidArgument


class Kind(IntEnum):
    """Values equal ``tmsp.events.v1.ProductKind``."""

    THREAT_DISCOVERY_APPLIANCE = 1
    THREAT_MITIGATOR = 2


class Protocol_(IntEnum):  # noqa: N801 - "Protocol" is typing's
    """Values equal ``tmsp.events.v1.UploadProtocol``."""

    SSH = 1
    SSL = 2


class State(IntEnum):
    """Values equal ``tmsp.events.v1.ProductState``."""

    ACTIVE = 1
    DISABLED = 2
    DEREGISTERED = 3


class Refusal:
    """Why a product may not connect; the exact words Test Connection answers with."""

    BAD_CREDENTIALS = "bad credentials"
    PRODUCT_DISABLED = "product disabled"
    PRODUCT_DEREGISTERED = "product deregistered"
    ACCOUNT_EXPIRED = "account expired"
    ACCOUNT_DELETED = "account deleted"
    ACCOUNT_UNKNOWN = "account unknown"
    TOO_MANY_FAILURES = "too many failed authentications"


MIN_UPLOAD_FREQUENCY = 60
MAX_UPLOAD_FREQUENCY = 7 * 24 * 3600
DEFAULT_HEARTBEAT_INTERVAL = 300
MIN_BANDWIDTH = 1024
MAX_NAME = 128


class PasswordHasher(Protocol):
    """argon2id in production (adapters.hashing); cheap parameters in unit tests."""

    def hash(self, password: str) -> str: ...

    def verify(self, encoded: str, password: str) -> bool: ...


@dataclass(frozen=True)
class AccountView:
    """The gateway's projection of one customer account (from the accounts topic)."""

    account_id: str
    managed_by_email: str
    valid_until: datetime | None
    deleted: bool
    version: int

    def refusal(self, now: datetime) -> str | None:
        """Why products of this account may not register or connect, or None."""
        if self.deleted:
            return Refusal.ACCOUNT_DELETED
        if self.valid_until is not None and self.valid_until <= now:
            return Refusal.ACCOUNT_EXPIRED
        return None


@dataclass(frozen=True)
class Product:
    """One registered product and its server credentials (hashes only)."""

    product_id: str
    account_id: str
    kind: Kind
    name: str
    protocol: Protocol_
    upload_frequency_seconds: int
    heartbeat_interval_seconds: int
    registration_email: str
    upload_bandwidth: int
    download_bandwidth: int
    state: State
    user_name: str
    password_hash: str
    registered_at: datetime
    updated_at: datetime
    version: int = 1
    ssh_public_keys: tuple[str, ...] = ()
    client_cert_sha256: str = ""
    credentials_version: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def refusal(self) -> str | None:
        if self.state is State.DISABLED:
            return Refusal.PRODUCT_DISABLED
        if self.state is State.DEREGISTERED:
            return Refusal.PRODUCT_DEREGISTERED
        return None

    def changed(self, now: datetime, **changes: object) -> Product:
        """A new version of this product with ``changes`` applied."""
        return replace(self, updated_at=now, version=self.version + 1, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Registration:
    """What an operator asks for when registering a product."""

    account_id: str
    kind: int
    name: str
    protocol: int
    upload_frequency_seconds: int
    registration_email: str
    upload_bandwidth: int
    download_bandwidth: int
    ssh_public_key: str = ""
    heartbeat_interval_seconds: int = DEFAULT_HEARTBEAT_INTERVAL
    request_id: str = ""
    """Client-chosen idempotency key (AIP-155): a retry with the same key registers nothing
    new (see :func:`new_product_id`)."""

    def product_fields(self) -> dict[str, object]:
        """The :class:`Product` fields this registration sets, normalised as stored."""
        return {
            "account_id": self.account_id,
            "kind": Kind(self.kind),
            "name": self.name.strip(),
            "protocol": Protocol_(self.protocol),
            "upload_frequency_seconds": self.upload_frequency_seconds,
            "heartbeat_interval_seconds": self.heartbeat_interval_seconds,
            "registration_email": self.registration_email.strip().lower(),
            "upload_bandwidth": self.upload_bandwidth,
            "download_bandwidth": self.download_bandwidth,
        }

    def describes(self, product: Product) -> bool:
        """Whether ``product`` is what this registration asks for (a retry's check)."""
        return all(getattr(product, k) == v for k, v in self.product_fields().items())


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


_T = TypeVar("_T")


def _unless_none(new: _T | None, old: _T) -> _T:
    return old if new is None else new


@dataclass(frozen=True)
class ProductUpdate:
    """The settings an operator changes on a registered product (None: unchanged)."""

    name: str | None = None
    upload_frequency_seconds: int | None = None
    upload_bandwidth: int | None = None
    download_bandwidth: int | None = None
    heartbeat_interval_seconds: int | None = None

    def changes(self, product: Product) -> dict[str, object]:
        """The :class:`Product` fields that change, checked as a registration's would be
        (InvalidArgument naming the field); empty when nothing changes."""
        p = product
        reg = Registration(
            account_id=p.account_id,
            kind=p.kind,
            name=_unless_none(self.name, p.name),
            protocol=p.protocol,
            upload_frequency_seconds=_unless_none(
                self.upload_frequency_seconds, p.upload_frequency_seconds
            ),
            registration_email=p.registration_email,
            upload_bandwidth=_unless_none(self.upload_bandwidth, p.upload_bandwidth),
            download_bandwidth=_unless_none(self.download_bandwidth, p.download_bandwidth),
            heartbeat_interval_seconds=_unless_none(
                self.heartbeat_interval_seconds, p.heartbeat_interval_seconds
            ),
        )
        validate(reg)
        return {k: v for k, v in reg.product_fields().items() if getattr(p, k) != v}


def validate(reg: Registration) -> None:
    """InvalidArgument naming the field, for the first thing wrong with ``reg``."""
    if not reg.account_id:
        raise InvalidArgument("account_id", "required")
    if reg.kind not in (Kind.THREAT_DISCOVERY_APPLIANCE, Kind.THREAT_MITIGATOR):
        raise InvalidArgument("kind", "must be a Threat Discovery Appliance or Threat Mitigator")
    if not reg.name.strip() or len(reg.name) > MAX_NAME:
        raise InvalidArgument("name", f"required, at most {MAX_NAME} characters")
    if reg.protocol not in (Protocol_.SSH, Protocol_.SSL):
        raise InvalidArgument("protocol", "must be SSH or SSL")
    if not MIN_UPLOAD_FREQUENCY <= reg.upload_frequency_seconds <= MAX_UPLOAD_FREQUENCY:
        raise InvalidArgument(
            "upload_frequency_seconds",
            f"must be between {MIN_UPLOAD_FREQUENCY} and {MAX_UPLOAD_FREQUENCY}",
        )
    if not 30 <= reg.heartbeat_interval_seconds <= 3600:
        raise InvalidArgument("heartbeat_interval_seconds", "must be between 30 and 3600")
    for name, value in (
        ("upload_bandwidth_bytes_per_second", reg.upload_bandwidth),
        ("download_bandwidth_bytes_per_second", reg.download_bandwidth),
    ):
        if value != 0 and value < MIN_BANDWIDTH:
            raise InvalidArgument(name, f"0 (unlimited) or at least {MIN_BANDWIDTH}")
    bare_address(reg.registration_email, "registration_email")
    if reg.ssh_public_key and not reg.ssh_public_key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise InvalidArgument("ssh_public_key", "not an OpenSSH public key")
    if reg.request_id and not _REQUEST_ID.fullmatch(reg.request_id):
        raise InvalidArgument("request_id", "1-64 characters: letters, digits and . _ : -")


def check_registration_email(email: str, account: AccountView, recorded_emails: set[str]) -> None:
    """The registration email must be the account owner's, or one already recorded for a
    product of the account; FailedPrecondition otherwise."""
    wanted = address_key(email)
    allowed = {address_key(account.managed_by_email), *map(address_key, recorded_emails)}
    allowed.discard("")
    if wanted not in allowed:
        raise FailedPrecondition("registration email does not match the account")


def check_account(account: AccountView | None, now: datetime) -> AccountView:
    if account is None:
        raise FailedPrecondition(Refusal.ACCOUNT_UNKNOWN)
    reason = account.refusal(now)
    if reason:
        raise FailedPrecondition(reason)
    return account


def new_user_name() -> str:
    return f"tmsp-{secrets.token_hex(6)}"


def new_password() -> str:
    """24 URL-safe characters (144 bits); shown to the operator once."""
    return secrets.token_urlsafe(18)


def new_product_id(account_id: str = "", request_id: str = "") -> str:
    """A random id; with a ``request_id``, the one id that key names in ``account_id`` (so a
    retried registration finds the product its first attempt stored)."""
    if not request_id:
        return f"prd-{secrets.token_hex(8)}"
    digest = hashlib.sha256(f"{account_id}\0{request_id}".encode()).hexdigest()
    return f"prd-{digest[:16]}"

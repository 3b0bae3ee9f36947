"""The security event trail's pure parts: what is stored, what the retention removes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tmsp.events.v1 import auth_pb2, envelope_pb2
from tmsp_auth.entrypoints.grpc_api import client_address
from tmsp_auth.service_layer.security_events import SecurityEvents, event_document
from tmsp_common.clock import FakeClock
from tmsp_common.kafka.envelope import to_timestamp

AT = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def envelope(account_id: str = "") -> envelope_pb2.Envelope:
    env = envelope_pb2.Envelope(event_id="ev-1", account_id=account_id)
    env.occurred_at.CopyFrom(to_timestamp(AT))
    return env


def test_an_event_is_stored_by_its_id_with_its_time_and_no_session() -> None:
    event = auth_pb2.AuthAuditEvent(
        kind=auth_pb2.AUTH_AUDIT_KIND_LOCKED_OUT,
        user_id="u1",
        account_id="acc1",
        email="a@example.com",
        source_ip="10.0.0.9",
        session_id="s-secret-ish",
        detail="locked for 900s",
    )
    assert event_document(envelope(), event) == {
        "_id": "ev-1",
        "account_id": "acc1",
        "user_id": "u1",
        "kind": auth_pb2.AUTH_AUDIT_KIND_LOCKED_OUT,
        "email": "a@example.com",
        "source_ip": "10.0.0.9",
        "detail": "locked for 900s",
        "occurred_at": AT,
    }


def test_an_event_of_no_account_is_not_stored_and_the_envelope_account_counts() -> None:
    failed = auth_pb2.AuthAuditEvent(kind=auth_pb2.AUTH_AUDIT_KIND_LOGIN_FAILED, email="x@y.z")
    assert event_document(envelope(), failed) is None
    doc = event_document(envelope("acc2"), failed)
    assert doc is not None and doc["account_id"] == "acc2"


class FakeEvents:
    def __init__(self) -> None:
        self.cutoffs: list[datetime] = []

    async def purge(self, before: datetime) -> int:
        self.cutoffs.append(before)
        return 3


async def test_the_retention_removes_what_is_older_than_it() -> None:
    fake: Any = FakeEvents()
    events = SecurityEvents(fake, None, FakeClock(AT), retention=timedelta(days=90))  # type: ignore[arg-type]
    assert await events.purge() == 3
    assert fake.cutoffs == [AT - timedelta(days=90)]


class Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def test_the_audit_address_is_the_named_one_else_the_peer() -> None:
    assert client_address("203.0.113.7", Peer("ipv4:10.0.0.5:51234")) == "203.0.113.7"
    assert client_address("", Peer("ipv4:10.0.0.5:51234")) == "10.0.0.5"
    assert client_address("", Peer("ipv6:[2001:db8::1]:443")) == "2001:db8::1"
    assert client_address("", Peer("unix:/tmp/sock")) == ""

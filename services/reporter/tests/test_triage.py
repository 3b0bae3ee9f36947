"""Triage decisions: status and note validation, and the use case with fakes (the read
model's incident lookup, the publisher, the clock). On the real broker and FerretDB, through
gRPC: tests/integration/test_reporter_api.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.message import Message

from tmsp.events.v1 import incidents_pb2
from tmsp_common.clock import FakeClock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_common.kafka.topics import INCIDENT_STATUS_CHANGES, Topic
from tmsp_reporter.domain.model import IncidentStatus
from tmsp_reporter.domain.validation import status_note, triage_status
from tmsp_reporter.service_layer.triage import IncidentTriage

T0 = datetime(2026, 6, 10, 6, 0, tzinfo=UTC)
RESOLVED = incidents_pb2.INCIDENT_STATUS_RESOLVED


class FakeIncidents:
    def __init__(self, *incidents: incidents_pb2.Incident) -> None:
        self.by_id = {i.incident_id: i for i in incidents}

    async def incident(
        self, account_id: str | None, incident_id: str
    ) -> incidents_pb2.Incident | None:
        found = self.by_id.get(incident_id)
        if found is None or (account_id is not None and found.account_id != account_id):
            return None
        return found


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Message, str, dict[str, Any]]] = []

    async def publish(self, topic: Topic, payload: Message, *, key: str, **kw: Any) -> None:
        self.sent.append((topic, payload, key, kw))


def triage(*incidents: incidents_pb2.Incident) -> tuple[IncidentTriage, FakePublisher]:
    publisher = FakePublisher()
    return IncidentTriage(FakeIncidents(*incidents), publisher, FakeClock(T0)), publisher


A1 = incidents_pb2.Incident(incident_id="inc-a1", account_id="acct-a", group_key="acct-a|r|h")
OLD = incidents_pb2.Incident(incident_id="inc-old", account_id="acct-a")


def test_triage_statuses() -> None:
    assert triage_status(RESOLVED) is IncidentStatus.RESOLVED
    assert triage_status(1) is IncidentStatus.NEW
    assert triage_status(4) is IncidentStatus.FALSE_POSITIVE
    for bad in (0, 5, -1, 99):
        with pytest.raises(InvalidArgument, match="status") as err:
            triage_status(bad)
        assert err.value.field == "status"


def test_status_notes() -> None:
    assert status_note("  fixed by re-imaging\n\tpc-7  ") == "fixed by re-imaging\n\tpc-7"
    assert status_note("") == ""
    assert status_note("x" * 2000) == "x" * 2000
    assert status_note(" " * 10 + "x" * 2000 + "\n") == "x" * 2000  # counted after stripping
    with pytest.raises(InvalidArgument, match="2000") as err:
        status_note("x" * 2001)
    assert err.value.field == "note"
    assert status_note("line 1\r\nline 2\rline 3") == "line 1\nline 2\nline 3"
    for bad in ["a\x00b", "bell\x07", "esc\x1b[31m", "del\x7f", "c1\x85x"]:
        with pytest.raises(InvalidArgument, match="control characters") as err:
            status_note(bad)
        assert err.value.field == "note"


async def test_a_change_is_published_keyed_by_incident_and_returned() -> None:
    use_case, publisher = triage(A1)
    change = await use_case.set_status("acct-a", "inc-a1", RESOLVED, " re-imaged \n", "u-1")
    assert change.change_id.startswith("chg-") and len(change.change_id) == 36
    assert (change.incident_id, change.account_id, change.group_key) == (
        "inc-a1",
        "acct-a",
        "acct-a|r|h",
    )
    assert change.status == RESOLVED and change.note == "re-imaged"
    assert change.changed_by_user_id == "u-1"
    assert from_timestamp(change.requested_at) == T0
    [(topic, payload, key, kw)] = publisher.sent
    assert topic is INCIDENT_STATUS_CHANGES and key == "inc-a1" and payload == change
    assert kw["account_id"] == "acct-a" and kw["event_id"] == change.change_id
    again = await use_case.set_status("acct-a", "inc-a1", RESOLVED, "", "u-1")
    assert again.change_id != change.change_id


async def test_refusals_publish_nothing() -> None:
    use_case, publisher = triage(A1, OLD)
    with pytest.raises(InvalidArgument, match="status"):
        await use_case.set_status("acct-a", "inc-a1", 0, "", "u-1")
    with pytest.raises(InvalidArgument, match="incident_id"):
        await use_case.set_status("acct-a", "", RESOLVED, "", "u-1")
    with pytest.raises(InvalidArgument, match="note"):
        await use_case.set_status("acct-a", "inc-a1", RESOLVED, "x" * 2001, "u-1")
    with pytest.raises(InvalidArgument, match="note"):
        await use_case.set_status("acct-a", "inc-a1", RESOLVED, "a\x00b", "u-1")
    with pytest.raises(NotFound, match="incident not found"):
        await use_case.set_status("acct-a", "inc-nope", RESOLVED, "", "u-1")
    with pytest.raises(NotFound, match="incident not found"):  # another tenant's incident
        await use_case.set_status("acct-b", "inc-a1", RESOLVED, "", "u-1")
    with pytest.raises(FailedPrecondition, match="before triage existed"):
        await use_case.set_status("acct-a", "inc-old", RESOLVED, "", "u-1")
    assert publisher.sent == []

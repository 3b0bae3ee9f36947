"""Incident triage: a portal user sets an incident's status (investigating, resolved, false
positive, back to new) with a note. The change goes on the bus for the correlator, which
owns incidents and publishes the next version; the answer comes once Kafka acknowledged."""

from __future__ import annotations

import uuid

from tmsp.events.v1 import incidents_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import INCIDENT_STATUS_CHANGES
from tmsp_common.logging import get_logger
from tmsp_reporter.domain.validation import status_note, triage_status
from tmsp_reporter.service_layer.metrics import STATUS_CHANGES
from tmsp_reporter.service_layer.ports import Incidents, Publisher

log = get_logger(__name__)


class IncidentTriage:
    def __init__(self, incidents: Incidents, publisher: Publisher, clock: Clock) -> None:
        self.incidents = incidents
        self.publisher = publisher
        self.clock = clock

    async def set_status(
        self, account_id: str, incident_id: str, status: int, note: str, changed_by: str
    ) -> incidents_pb2.IncidentStatusChange:
        """Publish one triage decision on ``incident-status-changes`` (key: the incident id)
        and return it as published.

        Raises InvalidArgument (status, incident_id, note), NotFound when the account has no
        such incident (also another tenant's), FailedPrecondition for an incident recorded
        before triage existed (no ``group_key`` to route the change to).
        """
        wanted = triage_status(status)
        if not incident_id:
            raise InvalidArgument("incident_id", "required")
        text = status_note(note)
        incident = await self.incidents.incident(account_id, incident_id)
        if incident is None:
            raise NotFound("incident not found")
        if not incident.group_key:
            raise FailedPrecondition(
                "the incident was recorded before triage existed and has no correlation group "
                "key; its status cannot be changed"
            )
        change = incidents_pb2.IncidentStatusChange(
            change_id=f"chg-{uuid.uuid4().hex}",
            incident_id=incident_id,
            account_id=account_id,
            group_key=incident.group_key,
            status=incidents_pb2.IncidentStatus.ValueType(wanted),
            note=text,
            changed_by_user_id=changed_by,
        )
        now = self.clock.now()
        change.requested_at.CopyFrom(to_timestamp(now))
        await self.publisher.publish(
            INCIDENT_STATUS_CHANGES,
            change,
            key=incident_id,
            account_id=account_id,
            occurred_at=now,
            event_id=change.change_id,
        )
        STATUS_CHANGES.labels(wanted.name.lower()).inc()
        log.info(
            "incident status change published",
            change_id=change.change_id,
            incident_id=incident_id,
            account_id=account_id,
            status=wanted.name.lower(),
            note_length=len(text),
        )
        return change

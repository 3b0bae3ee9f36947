"""The interceptor's tenant scoping and role table (the gRPC-level behaviour is tested over a
real channel in tests/integration/test_reporter_api.py)."""

from __future__ import annotations

import pytest

from tmsp.reporter.v1 import reporter_pb2
from tmsp_common.authn import Principal, Role
from tmsp_common.errors import InvalidArgument, NotFound, PermissionDenied
from tmsp_reporter.entrypoints.scoping import POLICY, SERVICE_NAME, authorize

ADMIN = Principal("u1", "acct-a", frozenset({Role.ACCOUNT_ADMINISTRATOR}))
ANALYST = Principal("u2", "acct-a", frozenset({Role.ANALYST}))
OPERATOR = Principal("u3", "provider", frozenset({Role.PROVIDER_OPERATOR}))
NOBODY = Principal("u4", "acct-a", frozenset())


def m(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


def test_every_rpc_has_a_policy() -> None:
    service = reporter_pb2.DESCRIPTOR.services_by_name["ReporterService"]
    assert {method.name for method in service.methods} == set(POLICY)


def test_empty_account_becomes_the_callers_own() -> None:
    request = reporter_pb2.ListIncidentsRequest()
    authorize(m("ListIncidents"), request, ANALYST)
    assert request.account_id == "acct-a"
    nested = reporter_pb2.SetReportScheduleRequest()
    authorize(m("SetReportSchedule"), nested, ADMIN)
    assert nested.schedule.account_id == "acct-a"


def test_foreign_account_is_not_found_and_roles_are_enforced() -> None:
    with pytest.raises(NotFound):
        authorize(m("ListIncidents"), reporter_pb2.ListIncidentsRequest(account_id="b"), ADMIN)
    with pytest.raises(PermissionDenied):
        authorize(m("GenerateReport"), reporter_pb2.GenerateReportRequest(), ANALYST)
    with pytest.raises(PermissionDenied):
        authorize(m("CreateMitigationTask"), reporter_pb2.CreateMitigationTaskRequest(), ADMIN)
    with pytest.raises(PermissionDenied):
        authorize(m("ListIncidents"), reporter_pb2.ListIncidentsRequest(), NOBODY)
    with pytest.raises(PermissionDenied):
        authorize("/other.Service/ListIncidents", reporter_pb2.ListIncidentsRequest(), OPERATOR)


def test_operators_see_everything_but_name_the_account_where_one_is_needed() -> None:
    request = reporter_pb2.ListIncidentsRequest()
    authorize(m("ListIncidents"), request, OPERATOR)
    assert request.account_id == ""  # every account
    authorize(m("ListIncidents"), reporter_pb2.ListIncidentsRequest(account_id="b"), OPERATOR)
    with pytest.raises(InvalidArgument, match="account_id"):
        authorize(m("GenerateReport"), reporter_pb2.GenerateReportRequest(), OPERATOR)


def test_analysts_triage_incidents_of_their_own_account_only() -> None:
    request = reporter_pb2.SetIncidentStatusRequest(incident_id="inc-1")
    authorize(m("SetIncidentStatus"), request, ANALYST)
    assert request.account_id == "acct-a"
    authorize(m("SetIncidentStatus"), reporter_pb2.SetIncidentStatusRequest(), ADMIN)
    with pytest.raises(NotFound):
        authorize(
            m("SetIncidentStatus"), reporter_pb2.SetIncidentStatusRequest(account_id="b"), ANALYST
        )
    with pytest.raises(InvalidArgument, match="account_id"):
        authorize(m("SetIncidentStatus"), reporter_pb2.SetIncidentStatusRequest(), OPERATOR)
    authorize(
        m("SetIncidentStatus"), reporter_pb2.SetIncidentStatusRequest(account_id="b"), OPERATOR
    )
    with pytest.raises(PermissionDenied):
        authorize(m("SetIncidentStatus"), reporter_pb2.SetIncidentStatusRequest(), NOBODY)

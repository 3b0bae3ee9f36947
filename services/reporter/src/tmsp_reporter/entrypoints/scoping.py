"""Tenant scoping and roles for every ReporterService method, applied in the interceptor.

``authorize`` runs in ``tmsp_common.grpc_server.ServiceInterceptor`` right after the token
is verified, so authentication and scoping happen in one place and before any method code:

- a customer (account administrator, analyst) naming another account gets NOT_FOUND; an
  empty account id becomes their own, so use cases only ever see permitted accounts;
- writes need an account administrator (or an operator); analysts only read, except
  triage (setting an incident's status);
- operator-only methods (mitigation tasks, cleanup pattern changes, forensic data
  downloads: that data goes to the provider, log maintenance changes) refuse everyone else;
- a method missing from the table is refused (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tmsp.reporter.v1 import reporter_pb2
from tmsp_common.authn import Principal, Role
from tmsp_common.errors import InvalidArgument, NotFound, PermissionDenied

SERVICE_NAME = reporter_pb2.DESCRIPTOR.services_by_name["ReporterService"].full_name


@dataclass(frozen=True)
class Access:
    write: bool = False
    operator_only: bool = False
    account_field: str | None = "account_id"
    """Where the request names its account (``a.b`` for a nested message); None: no account."""
    account_required: bool = False
    """Operators must name an account (the method works on one account)."""


POLICY: dict[str, Access] = {
    "ListCustomerAccounts": Access(),
    "GetCustomerAccount": Access(account_required=True),
    "ListIncidents": Access(),
    "GetIncident": Access(),
    # Triage is an analyst's job: analysts (read-only for everything else) may set an
    # incident's status. Tenant-scoped like every other method.
    "SetIncidentStatus": Access(account_required=True),
    "ListNonconformingEndpoints": Access(),
    "ListProducts": Access(account_required=True),
    "GenerateReport": Access(write=True, account_required=True),
    "ListReports": Access(account_required=True),
    "DownloadReport": Access(),
    "ListReportRecipients": Access(account_required=True),
    "AddReportRecipient": Access(write=True, account_required=True),
    "RemoveReportRecipient": Access(write=True, account_required=True),
    "GetReportSchedule": Access(account_required=True),
    "SetReportSchedule": Access(
        write=True, account_field="schedule.account_id", account_required=True
    ),
    "DownloadConsolidatedLogs": Access(account_required=True),
    "CreateMitigationTask": Access(write=True, operator_only=True, account_required=True),
    "ListMitigationTasks": Access(account_required=True),
    "PutCleanupPattern": Access(write=True, operator_only=True, account_required=True),
    "ListCleanupPatterns": Access(account_required=True),
    "DeleteCleanupPattern": Access(write=True, operator_only=True, account_required=True),
    "ListForensicData": Access(account_required=True),
    "DownloadForensicData": Access(operator_only=True, account_required=True),
    "GetLogMaintenance": Access(account_field=None),
    "SetLogMaintenance": Access(write=True, operator_only=True, account_field=None),
}


def _container(request: Any, path: str) -> tuple[Any, str]:
    *parents, name = path.split(".")
    target = request
    for part in parents:
        target = getattr(target, part)
    return target, name


def authorize(method: str, request: Any, principal: Principal) -> None:
    """Refuse (NotFound / PermissionDenied / InvalidArgument) or scope ``request`` in place."""
    service, _, name = method.lstrip("/").rpartition("/")
    access = POLICY.get(name) if service == SERVICE_NAME else None
    if access is None:
        raise PermissionDenied("method not allowed")
    if access.account_field is not None:
        target, field = _container(request, access.account_field)
        requested = str(getattr(target, field))
        if principal.is_operator:
            if not requested and access.account_required:
                raise InvalidArgument("account_id", "required for provider operators")
        elif requested and requested != principal.account_id:
            raise NotFound("account not found")
        else:
            setattr(target, field, principal.account_id)
    if access.operator_only and not principal.is_operator:
        raise PermissionDenied("provider operators only")
    principal.require_role(Role.ACCOUNT_ADMINISTRATOR, Role.ANALYST)
    if access.write and not principal.can_write():
        raise PermissionDenied("read-only role: needs account_administrator")

"""ReporterService: proto to command, use case, result to proto.

Account ids in requests were scoped by :func:`tmsp_reporter.entrypoints.scoping.authorize`
before any method runs; an empty one left here means "every account" (operators only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.events.v1 import incidents_pb2
from tmsp.reporter.v1 import reporter_pb2, reporter_pb2_grpc
from tmsp_common.authn import current_principal
from tmsp_common.errors import InvalidArgument
from tmsp_common.kafka.envelope import from_timestamp, to_timestamp
from tmsp_common.mongo import Document
from tmsp_common.paging import (
    decode_time_token,
    decode_token,
    encode_token,
    next_page_token,
    page_size,
)
from tmsp_common.severity import Severity
from tmsp_reporter.bootstrap import App
from tmsp_reporter.domain.forensics import ForensicFileRow
from tmsp_reporter.domain.model import (
    AccountScreenRow,
    Compliance,
    IncidentStatus,
    ProductRow,
    ReportSchedule,
)
from tmsp_reporter.domain.patterns import CleanupPatternEntry
from tmsp_reporter.domain.periods import ReportKind
from tmsp_reporter.domain.retention import LogMaintenance
from tmsp_reporter.service_layer.portal import IncidentQuery

COMPLIANCE = {
    Compliance.UNKNOWN: reporter_pb2.SECURITY_COMPLIANCE_UNKNOWN,
    Compliance.ENABLED: reporter_pb2.SECURITY_COMPLIANCE_ENABLED,
    Compliance.DISABLED: reporter_pb2.SECURITY_COMPLIANCE_DISABLED,
    Compliance.PARTIAL: reporter_pb2.SECURITY_COMPLIANCE_PARTIAL,
}
KINDS: dict[int, ReportKind] = {
    reporter_pb2.REPORT_KIND_DAILY_ADMINISTRATIVE: ReportKind.DAILY_ADMINISTRATIVE,
    reporter_pb2.REPORT_KIND_WEEKLY_EXECUTIVE: ReportKind.WEEKLY_EXECUTIVE,
    reporter_pb2.REPORT_KIND_MONTHLY_EXECUTIVE: ReportKind.MONTHLY_EXECUTIVE,
    reporter_pb2.REPORT_KIND_ON_DEMAND: ReportKind.ON_DEMAND,
}
KIND_TO_PROTO = {v: reporter_pb2.ReportKind.ValueType(k) for k, v in KINDS.items()}
M = TypeVar("M", bound=Message)
T = TypeVar("T")


def _set(target: Timestamp, at: datetime | None) -> None:
    if at is not None:
        target.CopyFrom(to_timestamp(at))


def _when(request: Any, field: str) -> datetime | None:
    return from_timestamp(getattr(request, field)) if request.HasField(field) else None


def _kind(value: int) -> ReportKind:
    kind = KINDS.get(value)
    if kind is None:
        raise InvalidArgument("kind", "unknown or unset report kind")
    return kind


def account_to_proto(row: AccountScreenRow) -> reporter_pb2.CustomerAccount:
    a = row.account
    msg = reporter_pb2.CustomerAccount(
        account_id=a.account_id,
        name=a.name,
        company_name=a.company_name,
        incidents=row.incidents.open_incidents if row.incidents else 0,
        open_incidents_live=row.live.open_incidents if row.live else 0,
        services=list(a.services),
        managed_by=a.managed_by,
        security_compliance=COMPLIANCE[row.compliance],
        time_zone=a.time_zone,
        product_count=row.product_count,
        nonconforming_endpoints=row.nonconforming,
        deleted=a.deleted,
    )
    _set(msg.incidents_as_of, row.incidents.as_of if row.incidents else None)
    _set(msg.last_received, row.last_received)
    _set(msg.valid_from, a.valid_from)
    _set(msg.valid_until, a.valid_until)
    return msg


def product_to_proto(p: ProductRow) -> reporter_pb2.Product:
    msg = reporter_pb2.Product(
        product_id=p.product_id,
        account_id=p.account_id,
        name=p.name,
        kind=p.kind,  # type: ignore[arg-type]  # stored enum number
        state=p.state,  # type: ignore[arg-type]
        liveness=p.liveness,  # type: ignore[arg-type]
    )
    if p.security_compliance is not None:
        msg.security_compliance_enabled = p.security_compliance
    _set(msg.liveness_since, p.liveness_since)
    _set(msg.last_received, p.last_received)
    _set(msg.last_heartbeat, p.last_heartbeat)
    return msg


def incident_summary(i: incidents_pb2.Incident) -> reporter_pb2.IncidentSummary:
    msg = reporter_pb2.IncidentSummary(
        incident_id=i.incident_id,
        account_id=i.account_id,
        title=i.title,
        severity=i.severity,
        status=i.status,
        event_count=i.event_count,
        endpoints=list(i.endpoints),
        attack_tags=list(i.attack_tags),
    )
    msg.first_seen.CopyFrom(i.first_seen)
    msg.last_seen.CopyFrom(i.last_seen)
    return msg


def report_to_proto(d: Document) -> reporter_pb2.Report:
    msg = reporter_pb2.Report(
        report_id=d["_id"],
        account_id=d["account_id"],
        kind=KIND_TO_PROTO[ReportKind(d["kind"])],
        time_zone=d.get("time_zone", ""),
        state=(
            reporter_pb2.REPORT_STATE_READY
            if d.get("state") == "ready"
            else reporter_pb2.REPORT_STATE_GENERATING
        ),
        title=d.get("title", ""),
        filename=d.get("filename", ""),
        size_bytes=int(d.get("size", 0)),
        sha256=d.get("sha256", ""),
        pages=int(d.get("pages", 0)),
    )
    _set(msg.period_start, d.get("period_start"))
    _set(msg.period_end, d.get("period_end"))
    if d.get("state") == "ready":
        _set(msg.created_at, d.get("created_at"))
    return msg


def schedule_to_proto(s: ReportSchedule) -> reporter_pb2.ReportSchedule:
    return reporter_pb2.ReportSchedule(
        account_id=s.account_id,
        daily_administrative=s.daily_administrative,
        weekly_executive=s.weekly_executive,
        monthly_executive=s.monthly_executive,
        time_zone=s.time_zone,
    )


def maintenance_to_proto(m: LogMaintenance) -> reporter_pb2.LogMaintenance:
    msg = reporter_pb2.LogMaintenance(
        report_retention_days=m.report_retention_days,
        log_retention_days=m.log_retention_days,
    )
    _set(msg.updated_at, m.updated_at)
    return msg


def from_attributes(message: type[M], source: object, **values: Any) -> M:
    """``message`` with ``values`` and every other field ``source`` has an attribute of
    (datetimes as timestamps; None left unset)."""
    msg = message(**values)
    for field in msg.DESCRIPTOR.fields:
        value = getattr(source, field.name, None)
        if field.name in values or value is None:
            continue
        if isinstance(value, datetime):
            _set(getattr(msg, field.name), value)
        else:
            setattr(msg, field.name, value)
    return msg


def pattern_to_proto(e: CleanupPatternEntry) -> reporter_pb2.CleanupPatternInfo:
    return from_attributes(reporter_pb2.CleanupPatternInfo, e)


def forensic_to_proto(row: ForensicFileRow) -> reporter_pb2.ForensicData:
    return from_attributes(
        reporter_pb2.ForensicData,
        row.file,
        complete=row.complete,
        received_at=to_timestamp(row.received_at),
    )


async def _described(
    chunks: AsyncIterator[bytes], message: type[M], **description: Message
) -> AsyncIterator[M]:
    """One ``message`` per chunk; the first also carries ``description``."""
    extra = description
    async for chunk in chunks:
        yield message(chunk=chunk, **extra)
        extra = {}


def _account(request: Any) -> str | None:
    return str(request.account_id) or None


class ReporterServicer(reporter_pb2_grpc.ReporterServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def ListCustomerAccounts(
        self, request: reporter_pb2.ListCustomerAccountsRequest, context: Any
    ) -> reporter_pb2.ListCustomerAccountsResponse:
        size = page_size(request.page_size, 50, 500)
        after = decode_token(request.page_token, 2)
        rows = await self.app.portal.list_accounts(
            _account(request),
            limit=size,
            after=(after[0], after[1]) if after else None,
            include_deleted=request.include_deleted,
        )
        token = ""
        if len(rows) == size:
            last = rows[-1].account
            token = encode_token(last.name.lower(), last.account_id)
        return reporter_pb2.ListCustomerAccountsResponse(
            accounts=[account_to_proto(r) for r in rows], next_page_token=token
        )

    async def GetCustomerAccount(
        self, request: reporter_pb2.GetCustomerAccountRequest, context: Any
    ) -> reporter_pb2.GetCustomerAccountResponse:
        row = await self.app.portal.get_account(request.account_id)
        return reporter_pb2.GetCustomerAccountResponse(account=account_to_proto(row))

    async def ListIncidents(
        self, request: reporter_pb2.ListIncidentsRequest, context: Any
    ) -> reporter_pb2.ListIncidentsResponse:
        size = page_size(request.page_size, 50, 500)
        try:
            statuses = tuple(IncidentStatus(int(s)) for s in request.statuses)
            severity = Severity(int(request.min_severity))
        except ValueError:
            raise InvalidArgument("statuses", "unknown status or severity") from None
        rows = await self.app.portal.list_incidents(
            IncidentQuery(
                account_id=_account(request),
                statuses=statuses,
                min_severity=severity,
                since=_when(request, "since"),
                until=_when(request, "until"),
                limit=size,
                after=decode_time_token(request.page_token),
            )
        )
        token = next_page_token(
            rows, size, lambda last: (from_timestamp(last.last_seen), last.incident_id)
        )
        return reporter_pb2.ListIncidentsResponse(
            incidents=[incident_summary(i) for i in rows], next_page_token=token
        )

    async def GetIncident(
        self, request: reporter_pb2.GetIncidentRequest, context: Any
    ) -> reporter_pb2.GetIncidentResponse:
        incident = await self.app.portal.get_incident(_account(request), request.incident_id)
        return reporter_pb2.GetIncidentResponse(incident=incident)

    async def SetIncidentStatus(
        self, request: reporter_pb2.SetIncidentStatusRequest, context: Any
    ) -> reporter_pb2.SetIncidentStatusResponse:
        change = await self.app.triage.set_status(
            request.account_id,
            request.incident_id,
            int(request.status),
            request.note,
            current_principal().user_id,
        )
        return reporter_pb2.SetIncidentStatusResponse(change=change)

    async def ListNonconformingEndpoints(
        self, request: reporter_pb2.ListNonconformingEndpointsRequest, context: Any
    ) -> reporter_pb2.ListNonconformingEndpointsResponse:
        size = page_size(request.page_size, 100, 1000)
        rows = await self.app.portal.list_nonconforming(
            _account(request),
            include_cleared=request.include_cleared,
            limit=size,
            after=decode_time_token(request.page_token),
        )
        token = next_page_token(
            rows,
            size,
            lambda last: (
                from_timestamp(last.updated_at),
                f"{last.account_id}/{last.endpoint_key}",
            ),
        )
        return reporter_pb2.ListNonconformingEndpointsResponse(
            endpoints=rows, next_page_token=token
        )

    async def ListProducts(
        self, request: reporter_pb2.ListProductsRequest, context: Any
    ) -> reporter_pb2.ListProductsResponse:
        rows = await self.app.portal.list_products(request.account_id)
        return reporter_pb2.ListProductsResponse(products=[product_to_proto(p) for p in rows])

    async def GenerateReport(
        self, request: reporter_pb2.GenerateReportRequest, context: Any
    ) -> reporter_pb2.GenerateReportResponse:
        doc, created = await self.app.reports.generate(
            request.account_id,
            _kind(request.kind),
            start=_when(request, "period_start"),
            end=_when(request, "period_end"),
            notify=request.notify,
            requested_by=current_principal().user_id,
        )
        return reporter_pb2.GenerateReportResponse(report=report_to_proto(doc), created=created)

    async def ListReports(
        self, request: reporter_pb2.ListReportsRequest, context: Any
    ) -> reporter_pb2.ListReportsResponse:
        size = page_size(request.page_size, 50, 500)
        rows = await self.app.reports.list_reports(
            request.account_id, limit=size, after=decode_time_token(request.page_token)
        )
        token = next_page_token(rows, size, lambda last: (last["period_start"], last["_id"]))
        return reporter_pb2.ListReportsResponse(
            reports=[report_to_proto(d) for d in rows], next_page_token=token
        )

    async def ListMitigationTasks(
        self, request: reporter_pb2.ListMitigationTasksRequest, context: Any
    ) -> reporter_pb2.ListMitigationTasksResponse:
        size = page_size(request.page_size, 50, 500)
        rows = await self.app.mitigation.list(
            request.account_id,
            request.product_id,
            limit=size,
            after=decode_time_token(request.page_token),
        )
        out = []
        for task, acknowledged_at, uploads in rows:
            state = reporter_pb2.MitigationTaskState(task=task, forensic_upload_ids=uploads)
            if acknowledged_at is not None:
                state.acknowledged_at.CopyFrom(to_timestamp(acknowledged_at))
            out.append(state)
        token = next_page_token(
            [task for task, _, _ in rows],
            size,
            lambda last: (from_timestamp(last.created_at), f"{last.product_id}/{last.task_id}"),
        )
        return reporter_pb2.ListMitigationTasksResponse(tasks=out, next_page_token=token)

    async def DownloadReport(
        self, request: reporter_pb2.DownloadReportRequest, context: Any
    ) -> AsyncIterator[reporter_pb2.DownloadReportResponse]:
        report, chunks = await self.app.reports.open_download(_account(request), request.report_id)
        async for msg in _described(
            chunks, reporter_pb2.DownloadReportResponse, report=report_to_proto(report)
        ):
            yield msg

    async def ListReportRecipients(
        self, request: reporter_pb2.ListReportRecipientsRequest, context: Any
    ) -> reporter_pb2.ListReportRecipientsResponse:
        rows = await self.app.reports.recipients(request.account_id)
        return reporter_pb2.ListReportRecipientsResponse(recipients=rows)

    async def AddReportRecipient(
        self, request: reporter_pb2.AddReportRecipientRequest, context: Any
    ) -> reporter_pb2.AddReportRecipientResponse:
        rows = await self.app.reports.add_recipient(request.account_id, request.email)
        return reporter_pb2.AddReportRecipientResponse(recipients=rows)

    async def RemoveReportRecipient(
        self, request: reporter_pb2.RemoveReportRecipientRequest, context: Any
    ) -> reporter_pb2.RemoveReportRecipientResponse:
        rows = await self.app.reports.remove_recipient(request.account_id, request.email)
        return reporter_pb2.RemoveReportRecipientResponse(recipients=rows)

    async def GetReportSchedule(
        self, request: reporter_pb2.GetReportScheduleRequest, context: Any
    ) -> reporter_pb2.GetReportScheduleResponse:
        s = await self.app.reports.schedule(request.account_id)
        return reporter_pb2.GetReportScheduleResponse(schedule=schedule_to_proto(s))

    async def SetReportSchedule(
        self, request: reporter_pb2.SetReportScheduleRequest, context: Any
    ) -> reporter_pb2.SetReportScheduleResponse:
        s = request.schedule
        stored = await self.app.reports.set_schedule(
            ReportSchedule(
                account_id=s.account_id,
                daily_administrative=s.daily_administrative,
                weekly_executive=s.weekly_executive,
                monthly_executive=s.monthly_executive,
                time_zone=s.time_zone,
            )
        )
        return reporter_pb2.SetReportScheduleResponse(schedule=schedule_to_proto(stored))

    async def DownloadConsolidatedLogs(
        self, request: reporter_pb2.DownloadConsolidatedLogsRequest, context: Any
    ) -> AsyncIterator[reporter_pb2.DownloadConsolidatedLogsResponse]:
        since, until = self.app.exports.validate(_when(request, "since"), _when(request, "until"))
        async for chunk in self.app.exports.csv_chunks(request.account_id, since, until):
            yield reporter_pb2.DownloadConsolidatedLogsResponse(chunk=chunk)

    async def CreateMitigationTask(
        self, request: reporter_pb2.CreateMitigationTaskRequest, context: Any
    ) -> reporter_pb2.CreateMitigationTaskResponse:
        task = await self.app.mitigation.create(
            request.account_id,
            request.product_id,
            int(request.kind),
            dict(request.parameters),
            current_principal().user_id,
        )
        return reporter_pb2.CreateMitigationTaskResponse(task=task)

    async def PutCleanupPattern(
        self, request: reporter_pb2.PutCleanupPatternRequest, context: Any
    ) -> reporter_pb2.PutCleanupPatternResponse:
        entry = await self.app.patterns.put(
            request.account_id,
            request.name,
            request.description,
            request.content,
            request.expected_version if request.HasField("expected_version") else None,
            current_principal().user_id,
        )
        return reporter_pb2.PutCleanupPatternResponse(pattern=pattern_to_proto(entry))

    async def ListCleanupPatterns(
        self, request: reporter_pb2.ListCleanupPatternsRequest, context: Any
    ) -> reporter_pb2.ListCleanupPatternsResponse:
        rows = await self.app.patterns.list(request.account_id)
        return reporter_pb2.ListCleanupPatternsResponse(
            patterns=[pattern_to_proto(e) for e in rows]
        )

    async def DeleteCleanupPattern(
        self, request: reporter_pb2.DeleteCleanupPatternRequest, context: Any
    ) -> reporter_pb2.DeleteCleanupPatternResponse:
        await self.app.patterns.delete(
            request.account_id, request.name, current_principal().user_id
        )
        return reporter_pb2.DeleteCleanupPatternResponse()

    async def ListForensicData(
        self, request: reporter_pb2.ListForensicDataRequest, context: Any
    ) -> reporter_pb2.ListForensicDataResponse:
        size = page_size(request.page_size, 50, 500)
        rows = await self.app.forensics.list_files(
            request.account_id,
            request.task_id,
            limit=size,
            after=decode_time_token(request.page_token),
        )
        token = next_page_token(rows, size, lambda last: (last.received_at, last.file.upload_id))
        return reporter_pb2.ListForensicDataResponse(
            files=[forensic_to_proto(r) for r in rows], next_page_token=token
        )

    async def DownloadForensicData(
        self, request: reporter_pb2.DownloadForensicDataRequest, context: Any
    ) -> AsyncIterator[reporter_pb2.DownloadForensicDataResponse]:
        row, chunks = await self.app.forensics.open_download(request.account_id, request.upload_id)
        async for msg in _described(
            chunks, reporter_pb2.DownloadForensicDataResponse, file=forensic_to_proto(row)
        ):
            yield msg

    async def GetLogMaintenance(
        self, request: reporter_pb2.GetLogMaintenanceRequest, context: Any
    ) -> reporter_pb2.GetLogMaintenanceResponse:
        m = await self.app.maintenance.get()
        return reporter_pb2.GetLogMaintenanceResponse(log_maintenance=maintenance_to_proto(m))

    async def SetLogMaintenance(
        self, request: reporter_pb2.SetLogMaintenanceRequest, context: Any
    ) -> reporter_pb2.SetLogMaintenanceResponse:
        wanted = request.log_maintenance
        stored = await self.app.maintenance.set(
            LogMaintenance(wanted.report_retention_days, wanted.log_retention_days)
        )
        return reporter_pb2.SetLogMaintenanceResponse(log_maintenance=maintenance_to_proto(stored))

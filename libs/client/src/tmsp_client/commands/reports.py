"""Reports (list, generate, download the PDF), consolidated logs, report recipients."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

from tmsp.reporter.v1 import reporter_pb2 as pb
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    add_limit,
    add_output,
    command,
    command_group,
    iso_time,
    paged,
    timestamp,
)
from tmsp_client.context import Context, UsageError
from tmsp_client.output import enum_label, render_fields, render_table, size, ts
from tmsp_client.transfer import Download, safe_name

KINDS = {
    "on-demand": pb.REPORT_KIND_ON_DEMAND,
    "daily": pb.REPORT_KIND_DAILY_ADMINISTRATIVE,
    "weekly": pb.REPORT_KIND_WEEKLY_EXECUTIVE,
    "monthly": pb.REPORT_KIND_MONTHLY_EXECUTIVE,
}
SCHEDULE = {
    # option -> ReportSchedule field (and what the report is called)
    "daily": "daily administrative",
    "weekly": "weekly executive",
    "monthly": "monthly executive",
}


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "reports", "reports: list, generate, download")
    p = command(verbs, common, "list", "newest period first", reports_list)
    add_account(p)
    add_limit(p)
    p = command(verbs, common, "generate", "generate a report now", reports_generate)
    add_account(p)
    p.add_argument("--kind", choices=list(KINDS), required=True)
    p.add_argument(
        "--since",
        type=iso_time,
        help="on-demand: the period start (required); periodic: a moment in the period "
        "(default: the last completed one)",
    )
    p.add_argument("--until", type=iso_time, help="on-demand: the period end (default: now)")
    p.add_argument("--notify", action="store_true", help="email it to the report recipients")
    p = command(verbs, common, "download", "the report's PDF", reports_download)
    p.add_argument("report_id", metavar="ID")
    add_account(p)
    add_output(p, "the report's file name")

    schedule = command_group(verbs, "schedule", "which periodic reports the account gets", "show")
    p = command(schedule, common, "show", "daily, weekly, monthly; the time zone", schedule_show)
    add_account(p)
    p = command(schedule, common, "set", "turn periodic reports on or off", schedule_set)
    for option, what in SCHEDULE.items():
        p.add_argument(
            f"--{option}", action=argparse.BooleanOptionalAction, help=f"the {what} report"
        )
    p.add_argument(
        "--time-zone", metavar="ZONE", help="IANA time zone of the periods ('': the account's)"
    )
    add_account(p)

    verbs = command_group(sub, "logs", "consolidated logs (CSV)")
    p = command(verbs, common, "download", "one row per event of each incident", logs_download)
    add_account(p)
    p.add_argument("--since", type=iso_time, required=True, help="period start (ISO 8601)")
    p.add_argument("--until", type=iso_time, required=True, help="period end (ISO 8601)")
    add_output(p, "consolidated-logs-<since>-<until>.csv")

    verbs = command_group(sub, "recipients", "who receives the account's reports")
    p = command(verbs, common, "list", "the addresses", recipients_list)
    add_account(p)
    for verb, run in (("add", recipients_add), ("remove", recipients_remove)):
        p = command(verbs, common, verb, f"{verb} one address", run)
        p.add_argument("email", metavar="EMAIL")
        add_account(p)


def _report_rows(reports: Sequence[pb.Report]) -> str:
    return render_table(
        ["report", "kind", "period start", "period end", "state", "pages", "size", "title"],
        [
            (
                r.report_id,
                enum_label(pb.ReportKind, r.kind),
                ts(r.period_start),
                ts(r.period_end),
                enum_label(pb.ReportState, r.state),
                r.pages,
                size(r.size_bytes),
                r.title,
            )
            for r in reports
        ],
    )


def reports_list(ctx: Context) -> None:
    request = pb.ListReportsRequest(account_id=ctx.account)
    r = paged(ctx.portal.ListReports, request, "reports", ctx.args.limit)
    ctx.out.result(r, _report_rows(r.reports))


def reports_generate(ctx: Context) -> None:
    a = ctx.args
    kind = KINDS[a.kind]
    request = pb.GenerateReportRequest(account_id=ctx.account, kind=kind, notify=a.notify)
    if kind == pb.REPORT_KIND_ON_DEMAND:
        if a.since is None:
            raise UsageError("reports generate --kind on-demand needs --since")
        request.period_end.CopyFrom(timestamp(a.until or datetime.now(UTC)))
    elif a.until is not None:
        raise UsageError("--until is for on-demand reports only")
    if a.since is not None:
        request.period_start.CopyFrom(timestamp(a.since))
    r = ctx.portal.GenerateReport(request)
    state = "generated" if r.created else "already there"
    hint = f"download: tmsp reports download {r.report.report_id}"
    text = f"{_report_rows([r.report])}\n({state}; {hint})"
    ctx.out.result(r, text)


def reports_download(ctx: Context) -> None:
    stream = ctx.portal.DownloadReport(
        pb.DownloadReportRequest(account_id=ctx.account, report_id=ctx.args.report_id)
    )
    expected = ""
    with Download("report", ctx.args.output, err=ctx.out.err) as download:
        for piece in stream:
            if piece.HasField("report"):
                expected = piece.report.sha256
                fallback = f"{piece.report.report_id or 'report'}.pdf"
                download.start(safe_name(piece.report.filename, fallback))
            download.write(piece.chunk)
        download.finish(expected)


def logs_download(ctx: Context) -> None:
    a = ctx.args
    if a.until <= a.since:
        raise UsageError("--until must be after --since")
    request = pb.DownloadConsolidatedLogsRequest(
        account_id=ctx.account, since=timestamp(a.since), until=timestamp(a.until)
    )
    name = f"consolidated-logs-{a.since:%Y%m%dT%H%M%S}-{a.until:%Y%m%dT%H%M%S}.csv"
    with Download("consolidated logs", a.output, err=ctx.out.err) as download:
        download.start(name)
        for piece in ctx.portal.DownloadConsolidatedLogs(request):
            download.write(piece.chunk)
        download.finish()


Schedule = pb.GetReportScheduleResponse | pb.SetReportScheduleResponse


def _schedule(ctx: Context, r: Schedule) -> None:
    s = r.schedule
    rows = [
        (what, "on" if getattr(s, what.replace(" ", "_")) else "off") for what in SCHEDULE.values()
    ]
    rows.append(("time zone", s.time_zone or "(the account's)"))
    ctx.out.result(r, render_fields(rows))


def schedule_show(ctx: Context) -> None:
    request = pb.GetReportScheduleRequest(account_id=ctx.account)
    _schedule(ctx, ctx.portal.GetReportSchedule(request))


def scheduled(current: pb.ReportSchedule, args: argparse.Namespace) -> pb.ReportSchedule:
    """``current`` with the options given applied (SetReportSchedule replaces it whole)."""
    wanted = pb.ReportSchedule()
    wanted.CopyFrom(current)
    for option, what in SCHEDULE.items():
        value = getattr(args, option)
        if value is not None:
            setattr(wanted, what.replace(" ", "_"), value)
    if args.time_zone is not None:
        wanted.time_zone = args.time_zone
    return wanted


def schedule_set(ctx: Context) -> None:
    a = ctx.args
    if a.time_zone is None and all(getattr(a, option) is None for option in SCHEDULE):
        raise UsageError("reports schedule set: nothing to change (--daily, --no-weekly, ...)")
    current = ctx.portal.GetReportSchedule(pb.GetReportScheduleRequest(account_id=ctx.account))
    wanted = scheduled(current.schedule, ctx.args)
    _schedule(ctx, ctx.portal.SetReportSchedule(pb.SetReportScheduleRequest(schedule=wanted)))


Recipients = (
    pb.ListReportRecipientsResponse
    | pb.AddReportRecipientResponse
    | pb.RemoveReportRecipientResponse
)


def _recipients(ctx: Context, r: Recipients) -> None:
    ctx.out.result(r, "\n".join(r.recipients) or "(no report recipients)")


def recipients_list(ctx: Context) -> None:
    _recipients(
        ctx, ctx.portal.ListReportRecipients(pb.ListReportRecipientsRequest(account_id=ctx.account))
    )


def recipients_add(ctx: Context) -> None:
    request = pb.AddReportRecipientRequest(account_id=ctx.account, email=ctx.args.email)
    _recipients(ctx, ctx.portal.AddReportRecipient(request))


def recipients_remove(ctx: Context) -> None:
    request = pb.RemoveReportRecipientRequest(account_id=ctx.account, email=ctx.args.email)
    _recipients(ctx, ctx.portal.RemoveReportRecipient(request))

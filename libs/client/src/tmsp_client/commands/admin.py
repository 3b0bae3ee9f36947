"""Administration: the account's security trail and users (auth), log maintenance
(retention of reports and incidents, the reporter)."""

from __future__ import annotations

import argparse

from tmsp.auth.v1 import auth_pb2
from tmsp.events.v1 import auth_pb2 as audit_pb2
from tmsp.reporter.v1 import reporter_pb2 as pb
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    add_limit,
    command,
    enum_list,
    labels,
    paged,
    positive,
)
from tmsp_client.context import Context
from tmsp_client.output import (
    enum_label,
    joined,
    render_fields,
    ts,
    yes_no,
)

AUDIT = audit_pb2.AuthAuditKind


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = command(
        sub,
        common,
        "security-events",
        "the account's security trail, newest first",
        security_events,
    )
    add_account(p)
    p.add_argument("--user", default="", metavar="ID", help="only this user's")
    p.add_argument(
        "--kind",
        type=enum_list(AUDIT),
        action="extend",
        default=[],
        help=f"only these (comma-separated, repeatable): {labels(AUDIT)}",
    )
    add_limit(p)

    p = command(sub, common, "users", "the account's users", users)
    add_account(p)

    p = command(
        sub,
        common,
        "log-maintenance",
        "how long reports and incidents are kept (set: operators)",
        log_maintenance,
    )
    p.add_argument("--report-days", type=positive, metavar="N", help="keep reports N days")
    p.add_argument("--log-days", type=positive, metavar="N", help="keep incidents and logs N days")


def security_events(ctx: Context) -> None:
    request = auth_pb2.ListSecurityEventsRequest(
        account_id=ctx.account, user_id=ctx.args.user, kinds=ctx.args.kind
    )
    r = paged(ctx.accounts.ListSecurityEvents, request, "events", ctx.args.limit)
    ctx.out.table(
        r,
        ["at", "event", "user", "source ip", "detail"],
        [
            (
                ts(e.occurred_at),
                enum_label(AUDIT, e.kind),
                e.email or e.user_id,
                e.source_ip,
                e.detail,
            )
            for e in r.events
        ],
    )


def users(ctx: Context) -> None:
    r = ctx.accounts.ListUsers(auth_pb2.ListUsersRequest(account_id=ctx.own_account()))
    ctx.out.table(
        r,
        ["email", "name", "roles", "2fa", "disabled", "locked until", "id"],
        [
            (
                u.email,
                u.display_name,
                joined(enum_label(auth_pb2.Role, role) for role in u.roles),
                yes_no(u.two_factor_enabled),
                yes_no(u.disabled),
                ts(u.locked_until, present=u.HasField("locked_until")),
                u.user_id,
            )
            for u in r.users
        ],
    )


def log_maintenance(ctx: Context) -> None:
    a = ctx.args
    current = ctx.portal.GetLogMaintenance(pb.GetLogMaintenanceRequest()).log_maintenance
    if a.report_days is not None or a.log_days is not None:
        wanted = pb.LogMaintenance(
            report_retention_days=(
                a.report_days if a.report_days is not None else current.report_retention_days
            ),
            log_retention_days=a.log_days if a.log_days is not None else current.log_retention_days,
        )
        current = ctx.portal.SetLogMaintenance(
            pb.SetLogMaintenanceRequest(log_maintenance=wanted)
        ).log_maintenance
    text = render_fields(
        [
            ("reports kept", f"{current.report_retention_days} days"),
            ("incidents and logs kept", f"{current.log_retention_days} days"),
            ("last changed", ts(current.updated_at)),
        ]
    )
    ctx.out.result(pb.GetLogMaintenanceResponse(log_maintenance=current), text)

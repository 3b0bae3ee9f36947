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
    command_group,
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
    render_table,
    ts,
    yes_no,
)

AUDIT = audit_pb2.AuthAuditKind
ROLES = {
    "administrator": auth_pb2.ROLE_ACCOUNT_ADMINISTRATOR,
    "analyst": auth_pb2.ROLE_ANALYST,
}


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

    verbs = command_group(
        sub, "users", "the account's users: list, invite, disable, unlock", "list"
    )
    p = command(verbs, common, "list", "email, roles, 2FA, disabled, locked", users)
    add_account(p)
    p = command(verbs, common, "invite", "add a user: an emailed link sets the password", invite)
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--role", choices=list(ROLES), required=True)
    add_account(p)
    for verb, run, what in (
        ("disable", disable_user, "the user can no longer log in; their sessions end"),
        ("unlock", unlock_user, "clear a lockout after failed logins"),
    ):
        p = command(verbs, common, verb, what, run)
        p.add_argument("user_id", metavar="USER_ID")

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


def _user_rows(users: list[auth_pb2.User]) -> list[tuple[object, ...]]:
    return [
        (
            u.email,
            u.display_name,
            joined(enum_label(auth_pb2.Role, role) for role in u.roles),
            yes_no(u.two_factor_enabled),
            yes_no(u.disabled),
            ts(u.locked_until, present=u.HasField("locked_until")),
            u.user_id,
        )
        for u in users
    ]


USER_COLUMNS = ["email", "name", "roles", "2fa", "disabled", "locked until", "id"]


def users(ctx: Context) -> None:
    r = ctx.accounts.ListUsers(auth_pb2.ListUsersRequest(account_id=ctx.own_account()))
    ctx.out.table(r, USER_COLUMNS, _user_rows(list(r.users)))


def invite(ctx: Context) -> None:
    a = ctx.args
    request = auth_pb2.CreateUserRequest(
        account_id=ctx.own_account(), email=a.email, display_name=a.name, roles=[ROLES[a.role]]
    )
    r = ctx.accounts.CreateUser(request)
    table = render_table(USER_COLUMNS, _user_rows([r.user]))
    ctx.out.result(r, f"{table}\n(invited: an emailed link lets {r.user.email} set a password)")


def disable_user(ctx: Context) -> None:
    r = ctx.accounts.DisableUser(auth_pb2.DisableUserRequest(user_id=ctx.args.user_id))
    ctx.out.result(r, f"user {ctx.args.user_id} disabled (their sessions ended)")


def unlock_user(ctx: Context) -> None:
    r = ctx.accounts.UnlockUser(auth_pb2.UnlockUserRequest(user_id=ctx.args.user_id))
    ctx.out.result(r, f"user {ctx.args.user_id} unlocked")


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

"""Event notifications ("Configure notifications" on the Customer Accounts screen): which
events the account is emailed about, to whom and how often, and the delivery log (the
notifier's NotificationSettingsService; administrators change their own account's)."""

from __future__ import annotations

import argparse

from tmsp.events.v1 import detections_pb2, notifications_pb2
from tmsp.notifier.v1 import notifier_pb2 as pb
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    add_limit,
    comma_list,
    command,
    command_group,
    enum_value,
    labels,
    paged,
    whole,
)
from tmsp_client.context import Context, UsageError
from tmsp_client.output import enum_label, joined, ts, yes_no

KIND = notifications_pb2.NotificationKind
SEVERITY = detections_pb2.Severity
EVENTS = {
    enum_label(KIND, kind): kind
    for kind in (
        notifications_pb2.NOTIFICATION_KIND_INCIDENT,
        notifications_pb2.NOTIFICATION_KIND_PRODUCT_OFFLINE,
        notifications_pb2.NOTIFICATION_KIND_PRODUCT_ONLINE,
        notifications_pb2.NOTIFICATION_KIND_LOGS_NOT_RECEIVED,
        notifications_pb2.NOTIFICATION_KIND_NONCONFORMING_ENDPOINT,
        notifications_pb2.NOTIFICATION_KIND_SUBSCRIPTION_EXPIRING,
        notifications_pb2.NOTIFICATION_KIND_REPORT_READY,
    )
}
"""The kinds an account configures, by label (``product-offline``)."""
CHANGES = ("enabled", "min_severity", "administrator", "recipients", "max_per_hour", "digest")
"""The options of ``notifications set``, as they are called in the namespace."""


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "notifications", "event notifications: settings, deliveries", "show")
    p = command(verbs, common, "show", "every event's settings", notifications_show)
    add_account(p)

    p = command(verbs, common, "set", "change one event's settings (administrators)", set_)
    p.add_argument(
        "--event", choices=list(EVENTS), required=True, metavar="KIND", help="|".join(EVENTS)
    )
    on = p.add_mutually_exclusive_group()
    on.add_argument("--enabled", dest="enabled", action="store_const", const=True, help="mail it")
    on.add_argument(
        "--disabled", dest="enabled", action="store_const", const=False, help="do not mail it"
    )
    p.add_argument(
        "--min-severity",
        type=enum_value(SEVERITY),
        metavar="SEVERITY",
        help=f"incidents below it are not mailed: {labels(SEVERITY)}",
    )
    p.add_argument(
        "--administrator",
        action=argparse.BooleanOptionalAction,
        help="mail the product administrator (the account's Managed By)",
    )
    p.add_argument(
        "--recipients",
        type=comma_list,
        metavar="A,B",
        help="further recipients, replacing the list ('': none)",
    )
    p.add_argument(
        "--max-per-hour", type=whole, metavar="N", help="at most N mails an hour (0: no limit)"
    )
    p.add_argument(
        "--digest",
        action=argparse.BooleanOptionalAction,
        help="past the limit: one digest when the hour closes (else the rest are dropped)",
    )
    p.add_argument(
        "--expected-version",
        type=whole,
        metavar="V",
        help="refuse unless the settings are still at this version (default: as just read)",
    )
    add_account(p)

    p = command(verbs, common, "deliveries", "what was sent, newest first", deliveries)
    add_account(p)
    add_limit(p)


def _rows(settings: list[pb.NotificationSettings]) -> list[tuple[object, ...]]:
    return [
        (
            enum_label(KIND, s.kind),
            yes_no(s.enabled),
            enum_label(SEVERITY, s.min_severity)
            if s.kind == notifications_pb2.NOTIFICATION_KIND_INCIDENT
            else None,
            yes_no(s.notify_administrator),
            joined(s.extra_recipients),
            s.max_per_hour or "no limit",
            yes_no(s.digest),
            s.version,
        )
        for s in settings
    ]


COLUMNS = ["event", "enabled", "min severity", "administrator", "recipients", "per hour",
           "digest", "version"]  # fmt: skip


def notifications_show(ctx: Context) -> None:
    request = pb.ListNotificationSettingsRequest(account_id=ctx.own_account())
    r = ctx.notifier.ListNotificationSettings(request)
    ctx.out.table(r, COLUMNS, _rows(list(r.settings)))


def changed(current: pb.NotificationSettings, args: argparse.Namespace) -> pb.NotificationSettings:
    """``current`` with the options given applied (UpdateNotificationSettings replaces every
    field of the kind)."""
    wanted = pb.NotificationSettings()
    wanted.CopyFrom(current)
    if args.enabled is not None:
        wanted.enabled = args.enabled
    if args.min_severity is not None:
        wanted.min_severity = args.min_severity
    if args.administrator is not None:
        wanted.notify_administrator = args.administrator
    if args.recipients is not None:
        del wanted.extra_recipients[:]
        wanted.extra_recipients.extend(args.recipients)
    if args.max_per_hour is not None:
        wanted.max_per_hour = args.max_per_hour
    if args.digest is not None:
        wanted.digest = args.digest
    return wanted


def set_(ctx: Context) -> None:
    a = ctx.args
    if all(getattr(a, option) is None for option in CHANGES):
        raise UsageError(
            "notifications set: nothing to change (--enabled, --disabled, --recipients, ...)"
        )
    account = ctx.own_account()
    current = ctx.notifier.GetNotificationSettings(
        pb.GetNotificationSettingsRequest(account_id=account, kind=EVENTS[a.event])
    ).settings
    version = a.expected_version if a.expected_version is not None else current.version
    r = ctx.notifier.UpdateNotificationSettings(
        pb.UpdateNotificationSettingsRequest(settings=changed(current, a), expected_version=version)
    )
    ctx.out.table(r, COLUMNS, _rows([r.settings]))


def deliveries(ctx: Context) -> None:
    request = pb.ListDeliveriesRequest(account_id=ctx.own_account())
    r = paged(ctx.notifier.ListDeliveries, request, "entries", ctx.args.limit)
    ctx.out.table(
        r,
        ["created", "event", "state", "attempts", "recipients", "subject", "sent", "last reply"],
        [
            (
                ts(e.created_at),
                enum_label(KIND, e.kind),
                enum_label(pb.DeliveryState, e.state),
                e.attempts,
                joined(e.recipients),
                e.subject,
                ts(e.sent_at),
                e.last_reply,
            )
            for e in r.entries
        ],
        empty="(nothing sent yet)",
    )

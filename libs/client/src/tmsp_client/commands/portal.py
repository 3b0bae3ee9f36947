"""The portal's screens: Customer Accounts (and one account: ``account show``), incidents
(with triage), nonconforming endpoints, products (``products list``: the reporter's read API;
the registry's view from ingest)."""

from __future__ import annotations

import argparse

from tmsp.events.v1 import detections_pb2, incidents_pb2, products_pb2
from tmsp.reporter.v1 import reporter_pb2 as pb
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    add_limit,
    command,
    command_group,
    enum_list,
    enum_value,
    iso_time,
    labels,
    paged,
    timestamp,
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

STATUS = incidents_pb2.IncidentStatus
SEVERITY = detections_pb2.Severity
KIND_SHORT = {
    products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE: "TDA",
    products_pb2.PRODUCT_KIND_THREAT_MITIGATOR: "TMI",
}


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "accounts", "the Customer Accounts screen", accounts)
    p.add_argument("--include-deleted", action="store_true", help="operators: deleted too")
    add_limit(p, 500)

    p = command(sub, common, "incidents", "incidents, most recently seen first", incidents)
    add_account(p, "your own; every account for operators")
    p.add_argument(
        "--status", type=enum_list(STATUS), default=[], help=f"comma-separated: {labels(STATUS)}"
    )
    p.add_argument(
        "--min-severity", type=enum_value(SEVERITY), default=0, help=f"{labels(SEVERITY)}"
    )
    p.add_argument("--since", type=iso_time, help="active at or after (ISO 8601)")
    p.add_argument("--until", type=iso_time, help="started before (ISO 8601)")
    add_limit(p)

    verbs = command_group(sub, "incident", "one incident: show it, triage it")
    p = command(
        verbs, common, "show", "chain of events, recommended actions, ATT&CK tags", incident_show
    )
    p.add_argument("incident_id", metavar="ID")
    add_account(p)
    p = command(verbs, common, "set-status", "record a triage decision", incident_set_status)
    p.add_argument("incident_id", metavar="ID")
    p.add_argument("status", type=enum_value(STATUS), metavar="STATUS", help=labels(STATUS))
    p.add_argument("--note", default="", help="why (at most 2000 characters)")
    add_account(p)

    p = command(sub, common, "endpoints", "nonconforming endpoints", endpoints)
    add_account(p, "your own; every account for operators")
    p.add_argument("--include-cleared", action="store_true", help="also those cleared since")
    add_limit(p, 1000)


def _compliance(value: int) -> str:
    return enum_label(pb.SecurityCompliance, value)


def accounts(ctx: Context) -> None:
    request = pb.ListCustomerAccountsRequest(include_deleted=ctx.args.include_deleted)
    r = paged(ctx.portal.ListCustomerAccounts, request, "accounts", ctx.args.limit)
    ctx.out.table(
        r,
        [
            "account",
            "company",
            "incidents",
            "last received",
            "services",
            "managed by",
            "valid from",
            "security compliance",
        ],
        [
            (
                a.name + (" (deleted)" if a.deleted else ""),
                a.company_name,
                a.incidents,
                ts(a.last_received),
                joined(a.services),
                a.managed_by,
                ts(a.valid_from),
                _compliance(a.security_compliance),
            )
            for a in r.accounts
        ],
    )


def account(ctx: Context) -> None:
    a = ctx.portal.GetCustomerAccount(
        pb.GetCustomerAccountRequest(account_id=ctx.args.account_id)
    ).account
    text = render_fields(
        [
            ("account", a.name),
            ("id", a.account_id),
            ("company", a.company_name),
            ("incidents", f"{a.incidents} (daily count as of {ts(a.incidents_as_of)})"),
            ("open incidents now", a.open_incidents_live),
            ("last received", ts(a.last_received)),
            ("services", joined(a.services)),
            ("managed by", a.managed_by),
            ("valid from", ts(a.valid_from)),
            ("valid until", ts(a.valid_until)),
            ("security compliance", _compliance(a.security_compliance)),
            ("time zone", a.time_zone),
            ("products", a.product_count),
            ("nonconforming endpoints", a.nonconforming_endpoints),
            *([("deleted", "yes")] if a.deleted else []),
        ]
    )
    ctx.out.result(pb.GetCustomerAccountResponse(account=a), text)


def _hosts(endpoints: list[detections_pb2.Endpoint]) -> str:
    return joined(e.host or e.ip for e in endpoints)


def incidents(ctx: Context) -> None:
    a = ctx.args
    request = pb.ListIncidentsRequest(
        account_id=ctx.account, statuses=a.status, min_severity=a.min_severity
    )
    if a.since:
        request.since.CopyFrom(timestamp(a.since))
    if a.until:
        request.until.CopyFrom(timestamp(a.until))
    r = paged(ctx.portal.ListIncidents, request, "incidents", a.limit)
    ctx.out.table(
        r,
        ["incident", "severity", "status", "last seen", "events", "endpoints", "title"],
        [
            (
                i.incident_id,
                enum_label(SEVERITY, i.severity),
                enum_label(STATUS, i.status),
                ts(i.last_seen),
                i.event_count,
                _hosts(list(i.endpoints)),
                i.title,
            )
            for i in r.incidents
        ],
    )


def incident_show(ctx: Context) -> None:
    i = ctx.portal.GetIncident(
        pb.GetIncidentRequest(account_id=ctx.account, incident_id=ctx.args.incident_id)
    ).incident
    fields: list[tuple[str, object]] = [
        ("incident", i.incident_id),
        ("title", i.title),
        ("severity", enum_label(SEVERITY, i.severity)),
        ("status", enum_label(STATUS, i.status)),
        ("account", i.account_id),
        ("first seen", ts(i.first_seen)),
        ("last seen", ts(i.last_seen)),
        ("events", i.event_count),
        ("endpoints", _hosts(list(i.endpoints))),
        ("ATT&CK", joined(i.attack_tags)),
        ("rules", joined(i.rule_ids)),
    ]
    if i.description:
        fields.append(("description", i.description))
    if i.HasField("status_changed_at"):
        fields.append(("triage", f"{ts(i.status_changed_at)} by {i.status_changed_by_user_id}"))
        fields.append(("note", i.status_note))
    timeline = render_table(
        ["at", "endpoint", "rule", "summary"],
        [
            (ts(e.at), e.endpoint.host or e.endpoint.ip, e.rule_id, e.summary)
            for e in sorted(i.timeline, key=lambda e: (e.at.seconds, e.at.nanos))
        ],
    )
    actions = "\n".join(f"  - {action}" for action in i.recommended_actions) or "  -"
    indented = "\n".join(f"  {line}" for line in timeline.splitlines())
    text = (
        f"{render_fields(fields)}\n\nChain of events:\n{indented}\n\n"
        f"Recommended actions:\n{actions}"
    )
    ctx.out.result(pb.GetIncidentResponse(incident=i), text)


def incident_set_status(ctx: Context) -> None:
    a = ctx.args
    change = ctx.portal.SetIncidentStatus(
        pb.SetIncidentStatusRequest(
            account_id=ctx.account, incident_id=a.incident_id, status=a.status, note=a.note
        )
    ).change
    text = (
        f"incident {change.incident_id}: {enum_label(STATUS, change.status)} recorded "
        f"(change {change.change_id}); the incident shows it once the correlator applied it"
    )
    ctx.out.result(pb.SetIncidentStatusResponse(change=change), text)


def endpoints(ctx: Context) -> None:
    request = pb.ListNonconformingEndpointsRequest(
        account_id=ctx.account, include_cleared=ctx.args.include_cleared
    )
    r = paged(ctx.portal.ListNonconformingEndpoints, request, "endpoints", ctx.args.limit, 1000)
    ctx.out.table(
        r,
        ["endpoint", "ip", "reason", "threats", "since", "cleared", "account", "product"],
        [
            (
                e.endpoint.host or e.endpoint_key,
                e.endpoint.ip,
                enum_label(incidents_pb2.NonconformingReason, e.reason),
                joined(e.threat_names),
                ts(e.since),
                yes_no(e.cleared),
                e.account_id,
                e.product_id,
            )
            for e in r.endpoints
        ],
    )


def products(ctx: Context) -> None:
    """The reporter's view: liveness, last received, security compliance."""
    r = ctx.portal.ListProducts(pb.ListProductsRequest(account_id=ctx.account))
    ctx.out.table(
        r,
        [
            "product",
            "kind",
            "state",
            "liveness",
            "since",
            "last received",
            "last heartbeat",
            "security compliance",
            "id",
        ],
        [
            (
                p.name,
                KIND_SHORT.get(p.kind, enum_label(products_pb2.ProductKind, p.kind)),
                enum_label(products_pb2.ProductState, p.state),
                enum_label(incidents_pb2.ProductLivenessState, p.liveness),
                ts(p.liveness_since),
                ts(p.last_received),
                ts(p.last_heartbeat),
                yes_no(
                    p.security_compliance_enabled
                    if p.HasField("security_compliance_enabled")
                    else None
                ),
                p.product_id,
            )
            for p in r.products
        ],
    )

"""One customer account: the portal's view of it (the reporter), and creating, editing and
deleting it (auth's AccountService: provider operators create and delete; administrators
edit some fields of their own account)."""

from __future__ import annotations

import argparse
from datetime import datetime

from tmsp.auth.v1 import auth_pb2
from tmsp_client.arguments import (
    Subparsers,
    comma_list,
    command,
    command_group,
    iso_time,
    timestamp,
)
from tmsp_client.commands import portal
from tmsp_client.context import Context, UsageError
from tmsp_client.output import joined, render_fields, ts

EDITABLE = {
    # option dest -> Account field (the update_mask names)
    "name": "name",
    "company": "company_name",
    "services": "services",
    "valid_from": "valid_from",
    "valid_until": "valid_until",
    "time_zone": "time_zone",
    "managed_by": "managed_by_user_id",
}
"""What ``account edit`` can change; administrators: company, time zone, managed by."""
CREATE_FIELDS = ("services", "valid_from", "valid_until", "time_zone")
"""What ``account create`` takes besides name and company (the owner is set once the user
exists: ``account edit --managed-by``)."""


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(
        sub, "account", "one customer account: show, create, edit, delete", "show"
    )
    p = command(verbs, common, "show", "the account in full (the portal's view)", portal.account)
    p.add_argument("account_id", nargs="?", default="", metavar="ID", help="default: your own")

    p = command(verbs, common, "create", "a new customer account (operators)", account_create)
    p.add_argument("--name", required=True, help="the account name (unique)")
    p.add_argument("--company", required=True, help="the company name")
    _account_fields(p)

    p = command(verbs, common, "edit", "change the fields given, only those", account_edit)
    p.add_argument("account_id", nargs="?", default="", metavar="ID", help="default: your own")
    p.add_argument("--name", help="the account name (operators)")
    p.add_argument("--company", help="the company name")
    _account_fields(p)
    p.add_argument(
        "--managed-by", metavar="USER_ID", help="the owner, a user of the account (`tmsp users`)"
    )

    p = command(verbs, common, "delete", "delete the account (operators)", account_delete)
    p.add_argument("account_id", metavar="ID")
    p.add_argument("--confirm", required=True, metavar="NAME", help="the account's name, again")


def _account_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--services", type=comma_list, metavar="A,B", help="the subscribed services (operators)"
    )
    p.add_argument(
        "--valid-from", type=time_or_clear, metavar="T", help="subscription start (none: clear)"
    )
    p.add_argument(
        "--valid-until", type=time_or_clear, metavar="T", help="subscription end (none: clear)"
    )
    p.add_argument("--time-zone", metavar="ZONE", help="IANA time zone (e.g. Europe/Berlin)")


CLEAR = "none"
"""A validity date given as this is cleared: named in the update mask, left unset."""


def time_or_clear(text: str) -> datetime | str:
    return CLEAR if text.strip().lower() == CLEAR else iso_time(text)


def _fill(account: auth_pb2.Account, args: argparse.Namespace, dests: list[str]) -> list[str]:
    """Set the Account fields of the options in ``dests`` that were given; returns those."""
    given = [dest for dest in dests if getattr(args, dest, None) is not None]
    for dest in given:
        value = getattr(args, dest)
        field = EDITABLE[dest]
        if value == CLEAR:
            continue  # in the mask without a value: the field is cleared
        if isinstance(value, datetime):
            getattr(account, field).CopyFrom(timestamp(value))
        elif isinstance(value, list):
            getattr(account, field).extend(value)
        else:
            setattr(account, field, value)
    return given


def update_request(account_id: str, args: argparse.Namespace) -> auth_pb2.UpdateAccountRequest:
    """UpdateAccount with the options given, and an update_mask naming exactly those."""
    account = auth_pb2.Account(account_id=account_id)
    given = _fill(account, args, list(EDITABLE))
    if not given:
        options = ", ".join(f"--{d.replace('_', '-')}" for d in EDITABLE)
        raise UsageError(f"account edit: nothing to change (give one of {options})")
    return auth_pb2.UpdateAccountRequest(
        account=account, update_mask=[EDITABLE[dest] for dest in given]
    )


def _show(
    ctx: Context,
    response: auth_pb2.CreateAccountResponse | auth_pb2.UpdateAccountResponse,
    done: str,
) -> None:
    a = response.account
    text = render_fields(
        [
            ("account", a.name),
            ("id", a.account_id),
            ("company", a.company_name),
            ("services", joined(a.services)),
            ("managed by", a.managed_by_email or a.managed_by_user_id),
            ("valid from", ts(a.valid_from)),
            ("valid until", ts(a.valid_until)),
            ("time zone", a.time_zone),
            ("version", a.version),
        ]
    )
    ctx.out.result(response, f"{text}\n({done})")


def account_create(ctx: Context) -> None:
    a = ctx.args
    account = auth_pb2.Account(name=a.name, company_name=a.company)
    _fill(account, a, list(CREATE_FIELDS))
    r = ctx.accounts.CreateAccount(auth_pb2.CreateAccountRequest(account=account))
    invite = f"tmsp users invite --account {r.account.account_id} --email E --role administrator"
    _show(ctx, r, f"created; its administrator: {invite}")


def account_edit(ctx: Context) -> None:
    request = update_request(ctx.args.account_id or ctx.own_account(), ctx.args)
    r = ctx.accounts.UpdateAccount(request)
    _show(ctx, r, f"changed: {', '.join(request.update_mask)}")


def account_delete(ctx: Context) -> None:
    a = ctx.args
    r = ctx.accounts.DeleteAccount(
        auth_pb2.DeleteAccountRequest(account_id=a.account_id, confirm_account_name=a.confirm)
    )
    ctx.out.result(
        r, f"account {a.confirm} deleted (its users disabled; reports go by log maintenance)"
    )

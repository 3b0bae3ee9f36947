"""Administrative commands.

``python -m tmsp_auth.entrypoints.cli bootstrap-operator --email E --password-stdin``
creates the provider's account and its first provider operator (idempotent: an existing
user is left untouched). ``create-account --name N --admin-email E --password-stdin``
creates a customer account with its first account administrator (demo set-up).
Both publish the account snapshot, like the gRPC API does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from tmsp_auth.bootstrap import App, build
from tmsp_auth.config import AuthSettings
from tmsp_auth.entrypoints.main import TOPICS
from tmsp_auth.service_layer.accounts import AccountFields
from tmsp_auth.service_layer.context import normalize_email
from tmsp_common import mongo
from tmsp_common.authn import Role
from tmsp_common.errors import DomainError
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.logging import configure_logging
from tmsp_common.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmsp_auth.entrypoints.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    op = sub.add_parser("bootstrap-operator", help="provider account + first provider operator")
    op.add_argument("--email", required=True)
    op.add_argument("--password-stdin", action="store_true", required=True)
    op.add_argument("--name", default="", help="display name")
    op.add_argument("--account-name", default="Provider")
    acct = sub.add_parser("create-account", help="customer account + its administrator")
    acct.add_argument("--name", required=True)
    acct.add_argument("--company", default="")
    acct.add_argument("--service", action="append", default=[])
    acct.add_argument("--time-zone", default="UTC")
    acct.add_argument("--admin-email", required=True)
    acct.add_argument("--admin-name", default="")
    acct.add_argument("--password-stdin", action="store_true", required=True)
    return parser


async def _with_app(settings: AuthSettings, args: argparse.Namespace, password: str) -> str:
    db = await mongo.connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    await ensure_topics(settings.kafka_bootstrap, TOPICS, prefix=settings.topic_prefix)
    producer = EventProducer(
        settings.kafka_bootstrap, service="auth", topic_prefix=settings.topic_prefix
    )
    await producer.start()
    try:
        app = await build(settings, db, producer)
        if args.command == "bootstrap-operator":
            return await _bootstrap_operator(app, args, password)
        return await _create_account(app, args, password)
    finally:
        await producer.stop()
        await mongo.close(db)


async def _bootstrap_operator(app: App, args: argparse.Namespace, password: str) -> str:
    ctx = app.ctx
    existing = await ctx.users.by_email(normalize_email(args.email))
    if existing is not None:
        return f"user exists: {existing['_id']} (account {existing['account_id']}); unchanged"
    account = await ctx.accounts.provider_account()
    if account is None:
        account = await app.accounts.create_account(
            None,
            AccountFields(name=args.account_name, company_name=args.account_name),
            provider=True,
        )
    user = await app.accounts.add_user(
        str(account["_id"]),
        args.email,
        args.name,
        [Role.PROVIDER_OPERATOR],
        password=password,
        reveal_conflicts=True,  # operators see every account
    )
    return f"provider operator created: {user['_id']} (account {account['_id']})"


async def _create_account(app: App, args: argparse.Namespace, password: str) -> str:
    account = await app.accounts.create_account(
        None,
        AccountFields(
            name=args.name,
            company_name=args.company,
            services=list(args.service),
            time_zone=args.time_zone,
        ),
    )
    user = await app.accounts.add_user(
        str(account["_id"]),
        args.admin_email,
        args.admin_name,
        [Role.ACCOUNT_ADMINISTRATOR],
        password=password,
        reveal_conflicts=True,  # operators see every account
    )
    doc = await app.ctx.accounts.update(
        str(account["_id"]),
        {"managed_by_user_id": str(user["_id"]), "managed_by_email": str(user["email"])},
        app.ctx.clock.now(),
    )
    if doc is not None:
        await app.ctx.events.account_changed(doc)
    return f"account created: {account['_id']}; administrator {user['_id']}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings(AuthSettings)
    configure_logging("auth", "WARNING", settings.log_format)
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(asyncio.run(_with_app(settings, args, password)))
    except DependencyUnavailable as exc:
        print(f"tmsp-auth: {exc}", file=sys.stderr)
        return 3
    except DomainError as exc:
        print(f"tmsp-auth: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

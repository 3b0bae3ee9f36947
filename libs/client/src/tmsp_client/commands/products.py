"""Products: the list (the reporter's liveness view, or ingest's registry), and registering
Threat Discovery Appliances and Threat Mitigators with ingest's ProductRegistryService
(provider operators): register, update, rotate credentials, disable, enable, deregister.

The server credentials a registration or a rotation issues are shown exactly once (the
gateway keeps only hashes): on stdout, or with ``--credentials-file F`` only in F (0600).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from tmsp.events.v1 import products_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    command,
    command_group,
    enum_value,
    whole,
)
from tmsp_client.commands import portal
from tmsp_client.context import Context, UsageError
from tmsp_client.output import enum_label, render_fields, render_table, ts
from tmsp_client.transfer import PrivateFile

KINDS = {
    "tda": products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
    "tmi": products_pb2.PRODUCT_KIND_THREAT_MITIGATOR,
}
PROTOCOL = products_pb2.UploadProtocol
SETTINGS = {
    # option dest -> RegisterProductRequest / UpdateProductRequest field
    "upload_frequency": "upload_frequency_seconds",
    "upload_bandwidth": "upload_bandwidth_bytes_per_second",
    "download_bandwidth": "download_bandwidth_bytes_per_second",
    "heartbeat_interval": "heartbeat_interval_seconds",
}
REGISTER_ATTEMPTS = 3
"""RegisterProduct is tried this often while ingest is unavailable (the same request id:
a retry registers nothing new)."""
UNSURE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
"""A failure that leaves open whether the registration was stored."""
SHOWN_ONCE = (
    "these credentials are shown only once (the gateway keeps only hashes): store them now; "
    "lost ones are replaced with `tmsp products rotate`"
)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "products", "registered products: list, register, manage", "list")
    p = command(verbs, common, "list", "registered products and liveness", products_list)
    add_account(p)
    p.add_argument(
        "--registry",
        action="store_true",
        help="the registration details from ingest (protocol, frequency, bandwidth)",
    )

    p = command(verbs, common, "register", "register a product (operators)", products_register)
    add_account(p, "your own; operators name the account")
    p.add_argument("--kind", choices=list(KINDS), required=True, help="TDA or TMI")
    p.add_argument("--name", required=True, help="a display name")
    p.add_argument(
        "--protocol", type=enum_value(PROTOCOL), required=True, metavar="ssh|ssl",
        help="ssh: SFTP uploads; ssl: HTTPS uploads and syslog over TLS",
    )  # fmt: skip
    p.add_argument(
        "--email", required=True, help="the registration email (the account owner's, or one "
        "already used for a product of the account)",
    )  # fmt: skip
    _settings(p, upload_default=300)
    p.add_argument(
        "--ssh-public-key", metavar="FILE", help="an OpenSSH public key accepted for SFTP too"
    )
    p.add_argument(
        "--request-id", metavar="KEY", help="the idempotency key (default: a new one); "
        "give a failed attempt's again to retry it without registering twice",
    )  # fmt: skip
    _credentials_file(p)

    p = command(verbs, common, "show", "one product's registration", products_show)
    p.add_argument("product_id", metavar="ID")

    p = command(verbs, common, "update", "change settings, keep credentials", products_update)
    p.add_argument("product_id", metavar="ID")
    p.add_argument("--name", help="a display name")
    _settings(p)
    p.add_argument(
        "--expected-version", type=whole, metavar="V",
        help="refuse unless the product is still at this version (as `products show` read it)",
    )  # fmt: skip

    p = command(verbs, common, "rotate", "issue new credentials (operators)", products_rotate)
    p.add_argument("product_id", metavar="ID")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--ssh-public-key", metavar="FILE", help="replace the accepted SSH key")
    key.add_argument("--no-ssh-public-key", action="store_true", help="accept no SSH key any more")
    _credentials_file(p)

    for verb, run, what in (
        ("disable", products_disable, "refuse its connections until enabled (operators)"),
        ("enable", products_enable, "let a disabled product connect again (operators)"),
        ("deregister", products_deregister, "remove the product for good (operators)"),
    ):
        p = command(verbs, common, verb, what, run)
        p.add_argument("product_id", metavar="ID")


def _settings(p: argparse.ArgumentParser, upload_default: int | None = None) -> None:
    default = f" (default {upload_default})" if upload_default else ""
    p.add_argument(
        "--upload-frequency", type=whole, metavar="S", default=upload_default,
        help=f"seconds between log uploads, 60 to 604800{default}",
    )  # fmt: skip
    p.add_argument(
        "--upload-bandwidth", type=whole, metavar="B", help="bytes/s, 0: unlimited, else >= 1024"
    )
    p.add_argument(
        "--download-bandwidth", type=whole, metavar="B", help="bytes/s, 0: unlimited, else >= 1024"
    )
    p.add_argument(
        "--heartbeat-interval", type=whole, metavar="S", help="seconds, 30 to 3600 (0: 300)"
    )


def _credentials_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--credentials-file", metavar="FILE",
        help="write the credentials (JSON) to FILE, mode 0600, instead of printing them",
    )  # fmt: skip


def _settings_given(args: argparse.Namespace) -> dict[str, int]:
    return {SETTINGS[d]: getattr(args, d) for d in SETTINGS if getattr(args, d) is not None}


def _read_key(path: str | None) -> str:
    return Path(path).read_text().strip() if path else ""


def register_request(ctx: Context) -> ingest_pb2.RegisterProductRequest:
    a = ctx.args
    return ingest_pb2.RegisterProductRequest(
        request_id=a.request_id or uuid.uuid4().hex,
        account_id=ctx.own_account(),
        kind=KINDS[a.kind],
        name=a.name,
        protocol=a.protocol,
        registration_email=a.email,
        ssh_public_key=_read_key(a.ssh_public_key),
        **_settings_given(a),
    )


def update_request(args: argparse.Namespace) -> ingest_pb2.UpdateProductRequest:
    """UpdateProduct setting only the options given (the others keep their values)."""
    request = ingest_pb2.UpdateProductRequest(product_id=args.product_id)
    for field, value in _settings_given(args).items():
        setattr(request, field, value)
    if args.name is not None:
        request.name = args.name
    if not _changes(request):
        raise UsageError("products update: nothing to change")
    if args.expected_version is not None:
        request.expected_version = args.expected_version
    return request


def _changes(request: ingest_pb2.UpdateProductRequest) -> list[str]:
    skip = ("product_id", "expected_version")
    return [f.name for f, _ in request.ListFields() if f.name not in skip]


def credentials_record(
    product: products_pb2.ProductSnapshot, c: ingest_pb2.ServerCredentials
) -> dict[str, str]:
    """What a product is set up with, as the credentials file holds it (PEM as text)."""
    return {
        "product_id": product.product_id,
        "name": product.name,
        "user_name": c.user_name,
        "password": c.password,
        "client_certificate_pem": c.client_certificate_pem.decode(),
        "client_private_key_pem": c.client_private_key_pem.decode(),
        "ca_certificate_pem": c.ca_certificate_pem.decode(),
    }


Issued = ingest_pb2.RegisterProductResponse | ingest_pb2.RotateProductCredentialsResponse


def _hand_over(ctx: Context, r: Issued, into: PrivateFile | None, done: str) -> None:
    """The product, and its new credentials once: into the file, or on stdout."""
    p = r.product
    summary = f"product {p.product_id} ({p.name}): {done}, version {p.version}"
    if into is not None:
        record = credentials_record(p, r.credentials)
        into.commit((json.dumps(record, indent=2) + "\n").encode())
        r.ClearField("credentials")  # --json: the product only
        ctx.out.result(r, f"{summary}\ncredentials (shown only here) written to {into.path}")
        ctx.out.note(f"{into.path}: mode 0600; {SHOWN_ONCE}")
        return
    c = r.credentials
    ctx.out.note(f"warning: {SHOWN_ONCE}")
    text = "\n".join(
        [
            summary,
            render_fields([("user name", c.user_name), ("password", c.password)]),
            c.client_certificate_pem.decode().rstrip(),
            c.client_private_key_pem.decode().rstrip(),
            "CA certificate:",
            c.ca_certificate_pem.decode().rstrip(),
        ]
    )
    ctx.out.result(r, text)


def _issue(ctx: Context, call: Callable[[], Issued], done: str) -> None:
    """``call()`` issues credentials; the credentials file, if any, is opened before it."""
    path = ctx.args.credentials_file
    with contextlib.ExitStack() as stack:
        into = stack.enter_context(PrivateFile(path)) if path else None
        _hand_over(ctx, call(), into, done)


def products_list(ctx: Context) -> None:
    if ctx.args.registry:
        _registry(ctx)
    else:
        portal.products(ctx)


def _rows(products: list[products_pb2.ProductSnapshot]) -> str:
    return render_table(
        ["product", "kind", "protocol", "state", "upload every", "heartbeat", "email", "id"],
        [
            (
                p.name,
                portal.KIND_SHORT.get(p.kind, enum_label(products_pb2.ProductKind, p.kind)),
                enum_label(PROTOCOL, p.protocol).upper(),
                enum_label(products_pb2.ProductState, p.state),
                f"{p.upload_frequency_seconds}s",
                f"{p.heartbeat_interval_seconds}s",
                p.registration_email,
                p.product_id,
            )
            for p in products
        ],
    )


def _registry(ctx: Context) -> None:
    r = ctx.ingest.ListProducts(ingest_pb2.ListProductsRequest(account_id=ctx.own_account()))
    ctx.out.result(r, _rows(list(r.products)))


def products_register(ctx: Context) -> None:
    request = register_request(ctx)

    def call() -> ingest_pb2.RegisterProductResponse:
        for attempt in range(1, REGISTER_ATTEMPTS):
            try:
                return ctx.ingest.RegisterProduct(request)
            except grpc.RpcError as exc:
                if not (isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNAVAILABLE):
                    raise
            time.sleep(0.5 * attempt)
        try:
            return ctx.ingest.RegisterProduct(request)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() in UNSURE:
                ctx.out.note(
                    f"it may have been registered: retry with --request-id {request.request_id}"
                )
            raise

    _issue(ctx, call, "registered")


def products_show(ctx: Context) -> None:
    r = ctx.ingest.GetProduct(ingest_pb2.GetProductRequest(product_id=ctx.args.product_id))
    p = r.product
    text = render_fields(
        [
            ("product", p.name),
            ("id", p.product_id),
            ("account", p.account_id),
            ("kind", enum_label(products_pb2.ProductKind, p.kind)),
            ("protocol", enum_label(PROTOCOL, p.protocol).upper()),
            ("state", enum_label(products_pb2.ProductState, p.state)),
            ("upload every", f"{p.upload_frequency_seconds}s"),
            ("upload bandwidth", _bandwidth(p.upload_bandwidth_bytes_per_second)),
            ("download bandwidth", _bandwidth(p.download_bandwidth_bytes_per_second)),
            ("heartbeat interval", f"{p.heartbeat_interval_seconds}s"),
            ("registration email", p.registration_email),
            ("server user name", p.server_user_name),
            ("registered", ts(p.registered_at)),
            ("updated", ts(p.updated_at)),
            ("version", p.version),
        ]
    )
    ctx.out.result(r, text)


def _bandwidth(value: int) -> str:
    return f"{value} B/s" if value else "unlimited"


Changed = (
    ingest_pb2.UpdateProductResponse
    | ingest_pb2.DisableProductResponse
    | ingest_pb2.EnableProductResponse
    | ingest_pb2.DeregisterProductResponse
)


def _changed(ctx: Context, r: Changed, done: str) -> None:
    p = r.product
    state = enum_label(products_pb2.ProductState, p.state)
    ctx.out.result(r, f"product {p.product_id} ({p.name}): {done}; {state}, version {p.version}")


def products_update(ctx: Context) -> None:
    request = update_request(ctx.args)
    changed = ", ".join(_changes(request))
    _changed(ctx, ctx.ingest.UpdateProduct(request), f"changed {changed}")


def products_rotate(ctx: Context) -> None:
    a = ctx.args
    request = ingest_pb2.RotateProductCredentialsRequest(product_id=a.product_id)
    if a.ssh_public_key or a.no_ssh_public_key:
        request.ssh_public_key = _read_key(a.ssh_public_key)
    _issue(
        ctx,
        lambda: ctx.ingest.RotateProductCredentials(request),
        "new credentials (the old ones no longer work)",
    )


def products_disable(ctx: Context) -> None:
    request = ingest_pb2.DisableProductRequest(product_id=ctx.args.product_id)
    _changed(ctx, ctx.ingest.DisableProduct(request), "disabled")


def products_enable(ctx: Context) -> None:
    request = ingest_pb2.EnableProductRequest(product_id=ctx.args.product_id)
    _changed(ctx, ctx.ingest.EnableProduct(request), "enabled")


def products_deregister(ctx: Context) -> None:
    request = ingest_pb2.DeregisterProductRequest(product_id=ctx.args.product_id)
    _changed(ctx, ctx.ingest.DeregisterProduct(request), "deregistered")

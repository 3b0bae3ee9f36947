"""Two-factor authentication of the signed-in user: setup (the emailed confirmation code,
the authenticator app's provisioning, its first code, the recovery codes), disabling it,
new recovery codes. Codes, the TOTP secret and passwords are read from prompts (no echo) or
stdin and never logged or saved; the secret and the recovery codes go to stdout only."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

from tmsp.auth.v1 import auth_pb2
from tmsp_client.arguments import Subparsers, command, command_group
from tmsp_client.commands.signin import StdinLines, reader
from tmsp_client.context import Context
from tmsp_client.output import render_fields, ts
from tmsp_client.transfer import PrivateFile

RecoveryCodes = auth_pb2.EnableTwoFactorResponse | auth_pb2.RegenerateRecoveryCodesResponse


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "2fa", "your two-factor authentication: setup, disable, codes")
    p = command(verbs, common, "setup", "turn it on with an authenticator app", setup)
    p.add_argument(
        "--code-stdin",
        action="store_true",
        help="read the emailed confirmation code, then the app's first code, from stdin lines",
    )
    p.add_argument("--qr", metavar="FILE", help="also write the QR code (PNG, mode 0600) to FILE")
    p = command(
        verbs,
        common,
        "change-device",
        "move it to a new authenticator app; the old one stops working",
        change_device,
    )
    p.add_argument(
        "--code-stdin",
        action="store_true",
        help="read the emailed confirmation code, then the new app's first code, from stdin lines",
    )
    p.add_argument("--qr", metavar="FILE", help="also write the QR code (PNG, mode 0600) to FILE")
    p = command(verbs, common, "disable", "turn it off (asks for your password)", disable)
    _password_stdin(p)
    p = command(
        verbs,
        common,
        "recovery-codes",
        "new recovery codes; the old ones stop working (asks for your password)",
        recovery_codes,
    )
    _password_stdin(p)


def _password_stdin(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )


def _codes(ctx: Context, r: RecoveryCodes, *, dialogue: bool = False) -> None:
    ctx.out.note(
        f"{len(r.recovery_codes)} recovery codes, each good for one login without the app; "
        "shown only now: keep them somewhere safe"
    )
    text = "\n".join(r.recovery_codes)
    if dialogue:  # --json: a line, like the dialogue's other step
        ctx.out.step(r, text)
    else:
        ctx.out.result(r, text)


def setup(ctx: Context) -> None:
    """SendConfirmationEmail, ConfirmSetupCode with the emailed code, EnableTwoFactor with
    the app's first code."""
    read = reader(ctx.args.code_stdin, StdinLines(), "code")
    with contextlib.ExitStack() as stack:
        email = _provision(ctx, read, stack)
        totp = read("Authenticator code (6 digits): ")
        enabled = ctx.auth.EnableTwoFactor(auth_pb2.EnableTwoFactorRequest(totp_code=totp))
    ctx.out.note(f"two-factor authentication is on for {email}: logins ask for the app's code")
    _codes(ctx, enabled, dialogue=True)


def change_device(ctx: Context) -> None:
    """The same dialogue as :func:`setup` for a new device, ending in ChangeDevice (the
    recovery codes stay as they are)."""
    read = reader(ctx.args.code_stdin, StdinLines(), "code")
    with contextlib.ExitStack() as stack:
        email = _provision(ctx, read, stack)
        totp = read("New authenticator code (6 digits): ")
        r = ctx.auth.ChangeDevice(auth_pb2.ChangeDeviceRequest(totp_code=totp))
    ctx.out.result(r, f"two-factor authentication for {email} moved to the new device")


def _provision(ctx: Context, read: Callable[[str], str], stack: contextlib.ExitStack) -> str:
    """SendConfirmationEmail, then ConfirmSetupCode with the emailed code: shows the new
    device's provisioning (and writes the QR file). Returns the signed-in address."""
    a = ctx.args
    qr = stack.enter_context(PrivateFile(a.qr)) if a.qr else None
    sent = ctx.auth.SendConfirmationEmail(auth_pb2.SendConfirmationEmailRequest())
    email = ctx.signed_in().session.email
    ctx.out.note(f"a confirmation code was emailed to {email} (valid until {ts(sent.expires_at)})")
    code = read("Confirmation code (emailed): ")
    prov = ctx.auth.ConfirmSetupCode(auth_pb2.ConfirmSetupCodeRequest(confirmation_code=code))
    if qr is not None:
        qr.commit(prov.qr_png)
        ctx.out.note(f"QR code written to {qr.path} (mode 0600: it holds the secret)")
    ctx.out.note("add this to your authenticator app (scan the QR code, or enter either):")
    shown = auth_pb2.ConfirmSetupCodeResponse(
        otpauth_uri=prov.otpauth_uri, secret_base32=prov.secret_base32
    )
    ctx.out.step(
        shown,
        render_fields([("otpauth uri", prov.otpauth_uri), ("secret", prov.secret_base32)]),
    )
    return email


def disable(ctx: Context) -> None:
    password = reader(ctx.args.password_stdin, StdinLines(), "password")("Password: ")
    r = ctx.auth.DisableTwoFactor(auth_pb2.DisableTwoFactorRequest(current_password=password))
    email = ctx.signed_in().session.email
    ctx.out.result(r, f"two-factor authentication is off for {email}")


def recovery_codes(ctx: Context) -> None:
    password = reader(ctx.args.password_stdin, StdinLines(), "password")("Password: ")
    request = auth_pb2.RegenerateRecoveryCodesRequest(current_password=password)
    _codes(ctx, ctx.auth.RegenerateRecoveryCodes(request))

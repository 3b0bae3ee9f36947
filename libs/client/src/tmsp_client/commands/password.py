"""Passwords (seed 000's login screen and an invitation's link): "forgot password" emails a
reset link, the link's token sets a new password (an invited user's first one too), and a
signed-in user changes theirs. Passwords, codes and tokens are read from prompts (no echo)
or stdin and never logged, printed or saved."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from tmsp.auth.v1 import auth_pb2
from tmsp_client.arguments import Subparsers, command, command_group
from tmsp_client.commands.signin import StdinLines, reader
from tmsp_client.context import Context, UsageError


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "password", "your password: forgot, reset from the link, change")
    p = command(verbs, common, "forgot", "email a reset link to the address", forgot)
    p.add_argument("--email", required=True)
    p = command(
        verbs,
        common,
        "reset",
        "set a new password with the emailed link (a reset, or an invitation)",
        reset,
    )
    p.add_argument(
        "--link-stdin",
        action="store_true",
        help="read the link (or its token) from stdin's first line, the new password from the next",
    )
    p = command(verbs, common, "change", "change your password (signed in)", change)
    p.add_argument(
        "--stdin",
        action="store_true",
        help="read the current password, the new one, then the app's code (2FA on) from stdin",
    )
    p.add_argument(
        "--totp", action="store_true", help="ask for the authenticator's code (2FA is on)"
    )


def token_of(link: str) -> str:
    """The token of a reset or invitation link (``...?token=T``), or the token itself."""
    text = link.strip()
    if "://" not in text:
        if not text:
            raise UsageError("no link or token given")
        return text
    tokens = parse_qs(urlsplit(text).query).get("token", [])
    if len(tokens) != 1 or not tokens[0]:
        raise UsageError("the link carries no token (expected ...?token=...)")
    return tokens[0]


def _new_password(read: Callable[[str], str], from_stdin: bool) -> str:
    new = read("New password: ")
    if not from_stdin and read("New password, again: ") != new:
        raise UsageError("the two new passwords differ")
    return new


def forgot(ctx: Context) -> None:
    email = ctx.args.email
    r = ctx.connect().public.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=email))
    # the answer is the same whether or not the address belongs to a user
    ctx.out.result(r, f"if {email} belongs to a user, a reset link is on its way there")


def reset(ctx: Context) -> None:
    from_stdin = ctx.args.link_stdin
    lines = StdinLines()
    token = token_of(reader(from_stdin, lines, "link")("Link (or token) from the email: "))
    new = _new_password(reader(from_stdin, lines, "password"), from_stdin)
    r = ctx.connect().public.ResetPassword(
        auth_pb2.ResetPasswordRequest(token=token, new_password=new)
    )
    ctx.out.result(r, "password set; log in with `tmsp login --email ...`")


def change(ctx: Context) -> None:
    a = ctx.args
    lines = StdinLines()
    current = reader(a.stdin, lines, "password")("Current password: ")
    new = _new_password(reader(a.stdin, lines, "password"), a.stdin)
    code = reader(a.stdin, lines, "code")("Authenticator code (6 digits): ") if a.totp else ""
    r = ctx.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=current, new_password=new, totp_code=code)
    )
    ctx.out.result(r, "password changed; your other sessions were signed out")

"""login, logout, whoami."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TextIO

import grpc

from tmsp.auth.v1 import auth_pb2
from tmsp_client.arguments import Subparsers, command
from tmsp_client.context import Context, UsageError
from tmsp_client.output import render_fields, when
from tmsp_client.session import NotLoggedIn, SecondFactor, Session, login


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "login", "log in (password, then TOTP if on)", login_command)
    p.add_argument("--email", required=True)
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of a prompt",
    )
    p.add_argument(
        "--totp-stdin",
        action="store_true",
        help="read the second factor's code from the next line of stdin instead of a prompt",
    )
    p.add_argument(
        "--emergency",
        action="store_true",
        help="lost the authenticator? have an emergency access code emailed and enter it",
    )
    p = command(sub, common, "logout", "end the session, remove its file", logout)
    p = command(sub, common, "whoami", "the saved session (no call)", whoami)


class StdinLines:
    """Consecutive lines of stdin: the password first, then the second factor's code."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin

    def next(self, what: str) -> str:
        line = self.stream.readline().rstrip("\r\n")
        if not line:
            raise UsageError(f"no {what} on stdin")
        return line


def reader(from_stdin: bool, lines: StdinLines, what: str) -> Callable[[str], str]:
    """Asks for ``what`` with a prompt (no echo), or takes the next line of ``lines``."""

    def read(prompt: str) -> str:
        if from_stdin:
            return lines.next(what)
        value = getpass.getpass(prompt).strip()
        if not value:
            raise UsageError(f"no {what} given")
        return value

    return read


def login_command(ctx: Context) -> None:
    a = ctx.args
    lines = StdinLines()
    password = reader(a.password_stdin, lines, "password")("Password: ")
    second = SecondFactor(reader(a.totp_stdin, lines, "code"), emergency=a.emergency)
    try:
        previous = ctx.store.load()
    except NotLoggedIn:
        previous = None  # a damaged file is replaced
    conn = ctx.connect(previous)
    result = login(conn.public, a.email, password, second)
    session = Session.from_proto(result.session, a.email, conn.targets)
    ctx.store.save(session)
    ctx.out.note(f"logged in as {a.email} (account {session.account_id})")
    ctx.out.note(f"session saved in {ctx.store.path}")
    if result.offer_two_factor_setup:
        ctx.out.note("two-factor authentication is off for you: turn it on with `tmsp 2fa setup`")
    if result.recovery_codes_left is not None:
        ctx.out.note(f"recovery code used: {result.recovery_codes_left} left")


def logout(ctx: Context) -> None:
    if ctx.store.load() is None:
        ctx.out.note("not logged in")
        return
    try:
        ctx.auth.Logout(auth_pb2.LogoutRequest())
    except NotLoggedIn:
        ctx.out.note("logged out (the session had already ended)")
        return
    except grpc.RpcError as exc:
        if not (isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNAUTHENTICATED):
            raise  # unreachable or failing: keep the file, so logout can be run again
        ctx.store.delete()
        ctx.out.note("logged out (the session had already ended)")
        return
    ctx.store.delete()
    ctx.out.note("logged out")


def whoami(ctx: Context) -> None:
    session = ctx.store.load()
    if session is None:
        raise NotLoggedIn()
    targets = ctx.targets(session)
    ctx.out.data(
        {
            "email": session.email,
            "user_id": session.user_id,
            "account_id": session.account_id,
            "session_id": session.session_id,
            "access_token_expires_at": session.access_token_expires_at.isoformat(),
            "auth_target": targets.auth,
            "portal_target": targets.portal,
            "ingest_target": targets.ingest,
            "notifier_target": targets.notifier,
            "tls_dir": targets.tls_dir,
        },
        render_fields(
            [
                ("email", session.email),
                ("user", session.user_id),
                ("account", session.account_id),
                ("session", session.session_id),
                ("access token until", when(session.access_token_expires_at)),
                ("auth", targets.auth),
                ("portal", targets.portal),
                ("ingest", targets.ingest),
                ("notifier", targets.notifier),
                ("tls dir", targets.tls_dir),
                ("session file", ctx.store.path),
            ]
        ),
    )

"""``tmsp``, the command-line client, driven as a person or a script would (subprocess,
password and TOTP code on stdin) against auth and the reporter run as deployed, on the
shared Kafka and FerretDB (own topic prefix, databases, ports, TLS directory).

Access tokens live 30 s here, so every command refreshes its session first (refresh tokens
rotate, and the session file follows).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tmsp.auth.v1 import auth_pb2
from tmsp.events.v1 import notifications_pb2
from tmsp_auth.testing import (
    AuthClient,
    Mailbox,
    code_for_step,
    md,
    run_cli,
    secret_from_uri,
    service_env,
    start_service,
)
from tmsp_common.testing import Infra, ServiceProcess, free_port, unique
from tmsp_reporter.testing import reporter_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.grpc,
    pytest.mark.tls,
]

OPERATOR_EMAIL = "operator@provider.example"
OPERATOR_PASSWORD = "operator-passphrase-42"
NOT_LOGGED_IN = "tmsp: not logged in: run `tmsp login`"


@dataclass
class Stack:
    infra: Infra
    prefix: str
    auth_target: str
    tls_dir: Path
    env: dict[str, str]
    """What the client reads: targets and TLS directory (each run adds its config dir)."""
    account_id: str
    account_name: str
    admin_email: str
    admin_password: str


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"{unique('itcli')}."
    database = prefix.rstrip(".")
    tls_dir = tmp_path_factory.mktemp("tls")
    auth_env = service_env(
        infra.env(), prefix, f"{database}_auth", tls_dir, TMSP_AUTH_ACCESS_TOKEN_MINUTES="0.5"
    )
    auth_target = f"127.0.0.1:{auth_env['TMSP_AUTH_GRPC_PORT']}"
    out = run_cli(
        auth_env,
        ["bootstrap-operator", "--email", OPERATOR_EMAIL, "--password-stdin"],
        OPERATOR_PASSWORD,
    )
    assert "provider operator created" in out
    name = unique("Acme ")
    admin_email = f"{unique('admin')}@acme.example"
    admin_password = f"pw-{unique('a')}-Tr0ub4dor"
    out = run_cli(
        auth_env,
        [
            "create-account",
            "--name",
            name,
            "--company",
            f"{name} Ltd",
            "--admin-email",
            admin_email,
            "--password-stdin",
        ],  # fmt: skip
        admin_password,
    )
    account_id = out.split("account created: ", 1)[1].split(";", 1)[0]
    portal_port = free_port()
    portal_env = reporter_env(
        infra_env=infra.env(),
        prefix=prefix,
        database=f"{database}_reporter",
        grpc_port=portal_port,
        tls_dir=str(tls_dir),
        auth_target=auth_target,
    )
    portal_env["TMSP_REPORTER_AUTH_PUBLIC_KEYS"] = ""  # ask auth for its keys
    procs: list[ServiceProcess] = []
    try:
        procs.append(start_service(auth_env))
        reporter = ServiceProcess("tmsp_reporter", portal_env).start()
        procs.append(reporter)
        reporter.wait_for_log("service ready", timeout=90)
        yield Stack(
            infra,
            prefix,
            auth_target,
            tls_dir,
            {
                "TMSP_AUTH_TARGET": auth_target,
                "TMSP_REPORTER_TARGET": f"127.0.0.1:{portal_port}",
                "TMSP_TLS_DIR": str(tls_dir),
            },
            account_id,
            name,
            admin_email,
            admin_password,
        )
    finally:
        for proc in reversed(procs):
            assert proc.terminate() == 0, proc.logs[-3000:]


@dataclass
class Client:
    """One user's ``tmsp``: its own config directory, the stack's targets."""

    stack: Stack
    config_dir: Path

    def run(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - our own entry point, arguments from the test
            [sys.executable, "-m", "tmsp_client", *args],
            input=stdin,
            env={
                **os.environ,
                **self.stack.env,
                "TMSP_CLIENT_CONFIG_DIR": str(self.config_dir),
                **env,
            },
            cwd=self.config_dir.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str, stdin: str = "") -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok(*args, "--json"))
        return data

    @property
    def session_file(self) -> Path:
        return self.config_dir / "session.json"

    def session(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.session_file.read_text())
        return data


def client(stack: Stack, tmp_path: Path, who: str) -> Client:
    work = tmp_path / who
    work.mkdir()
    return Client(stack, work / "config")


def eventually(check: Client, args: tuple[str, ...], needle: str, timeout: float = 60) -> str:
    """The output of ``tmsp args`` once it contains ``needle`` (the portal learns of
    accounts from the bus, a moment after auth created them)."""
    deadline = time.monotonic() + timeout
    while True:
        out = check.ok(*args)
        if needle in out or time.monotonic() > deadline:
            assert needle in out, out
            return out
        time.sleep(0.5)


def test_operator_works_the_portal_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    op = client(stack, tmp_path, "operator")

    # Not logged in: one line, exit 2, nothing created.
    before = op.run("accounts")
    assert (before.returncode, before.stderr.strip()) == (2, NOT_LOGGED_IN)
    bad = op.run("login", "--email", OPERATOR_EMAIL, "--password-stdin", stdin="wrong-pass\n")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "tmsp: Login: UNAUTHENTICATED invalid email or password"
    assert not op.session_file.exists()

    # Login: password from stdin; the session file is private and holds no password.
    login = op.run(
        "login", "--email", OPERATOR_EMAIL, "--password-stdin", stdin=f"{OPERATOR_PASSWORD}\n"
    )
    assert login.returncode == 0, login.stderr
    assert f"logged in as {OPERATOR_EMAIL}" in login.stderr
    assert stat.S_IMODE(op.session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(op.config_dir.stat().st_mode) == 0o700
    saved = op.session()
    text = op.session_file.read_text()
    assert OPERATOR_PASSWORD not in text
    assert saved["access_token"] and saved["refresh_token"]
    assert saved["access_token"] not in login.stdout + login.stderr
    assert saved["refresh_token"] not in login.stdout + login.stderr
    assert op.json("whoami")["email"] == OPERATOR_EMAIL

    # The Customer Accounts screen, once the reporter has the account from the bus.
    screen = eventually(op, ("accounts",), stack.account_name)
    header = screen.splitlines()[0]
    for column in ("ACCOUNT", "COMPANY", "INCIDENTS", "LAST RECEIVED", "SERVICES",
                   "MANAGED BY", "VALID FROM", "SECURITY COMPLIANCE"):  # fmt: skip
        assert column in header
    row = next(line for line in screen.splitlines() if stack.account_name in line)
    assert f"{stack.account_name} Ltd" in row and stack.admin_email in row
    rows = op.json("accounts")["accounts"]
    assert isinstance(rows, list)
    assert stack.account_id in {r["account_id"] for r in rows}
    detail = op.ok("account", stack.account_id)
    assert "company:" in detail and f"{stack.account_name} Ltd" in detail

    # Every command refreshed the 30 s access token: the refresh token rotated, and saved.
    assert op.session()["refresh_token"] != saved["refresh_token"]
    assert stat.S_IMODE(op.session_file.stat().st_mode) == 0o600

    acct = ("--account", stack.account_id)

    # The custom cleanup pattern catalogue: put, list (with the content's SHA-256), delete.
    pattern = tmp_path / "clean-emotet.yaml"
    pattern.write_bytes(b"remove: C:/Users/Public/emotet.exe\n" * 20)
    put = op.ok("patterns", "put", "clean-emotet", str(pattern), "--description", "Emotet", *acct)
    assert "pattern clean-emotet: version 1" in put
    listed = op.json("patterns", "list", *acct)["patterns"]
    assert isinstance(listed, list)
    (entry,) = listed
    assert entry["name"] == "clean-emotet" and entry["description"] == "Emotet"
    assert entry["content_sha256"] == hashlib.sha256(pattern.read_bytes()).hexdigest()
    assert "clean-emotet" in op.ok("patterns", "list", *acct)
    assert "deleted" in op.ok("patterns", "delete", "clean-emotet", *acct)
    assert op.ok("patterns", "list", *acct).strip() == "(no cleanup patterns)"

    # An on-demand report: generated, listed, downloaded (SHA-256 checked).
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    report = op.json("reports", "generate", "--kind", "on-demand", "--since", since, *acct)
    report_id = report["report"]["report_id"]
    assert report_id in op.ok("reports", "list", *acct)
    pdf = tmp_path / "report.pdf"
    download = op.run("reports", "download", str(report_id), "-o", str(pdf), *acct)
    assert download.returncode == 0, download.stderr
    assert pdf.read_bytes().startswith(b"%PDF")
    summary = download.stderr.strip()
    assert "\r" not in summary and len(summary.splitlines()) == 1  # not a terminal
    assert f"report: {pdf.stat().st_size} bytes" in summary and "SHA-256 checked" in summary
    assert download.stdout == ""

    # Consolidated logs of the period (no incidents yet: the CSV header only).
    until = datetime.now(UTC).isoformat()
    csv_file = tmp_path / "logs.csv"
    op.ok("logs", "download", "--since", since, "--until", until, "-o", str(csv_file), *acct)
    assert csv_file.read_text().count("\n") >= 1

    # The operator's own security trail shows the failed and the good login.
    trail = op.ok("security-events")
    assert "login-succeeded" in trail and OPERATOR_EMAIL in trail
    assert "login-failed" in trail
    only = op.json("security-events", "--kind", "login-failed")["events"]
    assert isinstance(only, list) and only
    assert {e["kind"] for e in only} == {"AUTH_AUDIT_KIND_LOGIN_FAILED"}

    # The account's users, and log maintenance read and set (operators).
    assert stack.admin_email in op.ok("users", *acct)
    op.ok("log-maintenance")
    changed = op.ok("log-maintenance", "--report-days", "400", "--log-days", "200")
    assert "400 days" in changed and "200 days" in changed
    again = op.json("log-maintenance")["log_maintenance"]
    assert again["report_retention_days"] == 400 and again["log_retention_days"] == 200

    # Failures: one line naming the RPC and its status, or the unreachable target.
    missing = op.run("incident", "show", "no-such-incident", *acct)
    assert missing.returncode == 1
    assert missing.stderr.startswith("tmsp: GetIncident: NOT_FOUND")
    assert len(missing.stderr.strip().splitlines()) == 1
    nowhere = f"127.0.0.1:{free_port()}"
    down = op.run("products", *acct, "--portal", nowhere)
    assert down.returncode == 1
    assert down.stderr.startswith(
        f"tmsp: cannot reach portal at {nowhere} (ListProducts: UNAVAILABLE"
    )
    usage = op.run("incidents", "--status", "closed")
    assert usage.returncode == 2 and "'closed' is not one of" in usage.stderr

    # Logout ends the session on the server too: its refresh token no longer works.
    last_refresh = op.session()["refresh_token"]
    assert op.run("logout").returncode == 0
    assert not op.session_file.exists()
    after = op.run("accounts")
    assert (after.returncode, after.stderr.strip()) == (2, NOT_LOGGED_IN)
    expired = {
        **saved,
        "refresh_token": last_refresh,
        "access_token_expires_at": "2000-01-01T00:00Z",
    }
    op.session_file.write_text(json.dumps(expired))
    ended = op.run("accounts")
    assert ended.returncode == 2
    assert ended.stderr.strip() == "tmsp: not logged in (the session has ended): run `tmsp login`"
    assert not op.session_file.exists()


@pytest.fixture
async def auth_client(stack: Stack) -> AsyncIterator[AuthClient]:
    c = AuthClient(stack.auth_target, str(stack.tls_dir))
    yield c
    await c.close()


async def enable_two_factor(stack: Stack, auth: AuthClient) -> str:
    """The administrator turns 2FA on (the emailed confirmation code read from the bus);
    returns the TOTP secret."""
    session = await auth.session(stack.admin_email, stack.admin_password)
    async with Mailbox(stack.infra.kafka_bootstrap, stack.prefix) as mail:
        await auth.auth.SendConfirmationEmail(
            auth_pb2.SendConfirmationEmailRequest(), metadata=md(session)
        )
        note = await mail.next(
            notifications_pb2.NotificationKind.NOTIFICATION_KIND_CONFIRMATION_CODE,
            stack.admin_email,
        )
    prov = await auth.auth.ConfirmSetupCode(
        auth_pb2.ConfirmSetupCodeRequest(confirmation_code=note.params["code"]),
        metadata=md(session),
    )
    secret = secret_from_uri(prov.otpauth_uri)
    await auth.auth.EnableTwoFactor(
        auth_pb2.EnableTwoFactorRequest(totp_code=code_for_step(secret, 0)), metadata=md(session)
    )
    return secret


async def test_administrator_logs_in_with_password_and_totp(
    stack: Stack, tmp_path: Path, auth_client: AuthClient
) -> None:
    admin = client(stack, tmp_path, "admin")
    secret = await enable_two_factor(stack, auth_client)
    login = ("login", "--email", stack.admin_email, "--password-stdin", "--totp-stdin")

    wrong = admin.run(*login, stdin=f"{stack.admin_password}\n000000\n")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("tmsp: VerifySecondFactor: UNAUTHENTICATED")
    missing = admin.run(*login, stdin=f"{stack.admin_password}\n")
    assert (missing.returncode, missing.stderr.strip()) == (2, "tmsp: no code on stdin")
    assert not admin.session_file.exists()

    code = code_for_step(secret, 1)  # the enrolment used this step's code
    ok = admin.run(*login, stdin=f"{stack.admin_password}\n{code}\n")
    assert ok.returncode == 0, ok.stderr
    assert code not in admin.session_file.read_text()
    assert stack.admin_password not in admin.session_file.read_text()

    # Their own account: its trail shows 2FA on and the login with the second factor.
    trail = admin.ok("security-events")
    assert "two-factor-enabled" in trail and "second-factor-failed" in trail
    assert "login-succeeded" in trail
    assert stack.account_name in admin.ok("account")
    assert admin.ok("incidents").splitlines()[0].startswith("INCIDENT")
    assert admin.ok("endpoints").splitlines()[0].startswith("ENDPOINT")
    assert admin.ok("products").splitlines()[0].startswith("PRODUCT")

    # Report recipients (administrators), and what only operators may do.
    assert "cfo@acme.example" in admin.ok("recipients", "add", "CFO@acme.example")
    assert "cfo@acme.example" in admin.ok("recipients", "list")
    assert admin.ok("recipients", "remove", "cfo@acme.example").strip() == "(no report recipients)"
    denied = admin.run("tasks", "create", "--product", "p-1", "--kind", "forensic")
    assert denied.returncode == 1
    assert denied.stderr.startswith("tmsp: CreateMitigationTask: PERMISSION_DENIED")
    assert admin.run("logout").returncode == 0

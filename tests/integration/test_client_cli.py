"""``tmsp``, the command-line client, driven as a person or a script would (subprocess,
password and codes on stdin) against auth, the reporter, the notifier (mailing a recording
SMTP server) and ingest's gateway run as deployed, on the shared Kafka and FerretDB (own
topic prefix, databases, ports, TLS directory).

Access tokens live 30 s here, so every command refreshes its session first (refresh tokens
rotate, and the session file follows). Three wrong passwords lock a user out.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from tmsp.events.v1 import notifications_pb2
from tmsp_auth.testing import (
    AuthClient,
    Mailbox,
    code_for_step,
    new_password,
    run_cli,
    secret_from_uri,
    service_env,
    start_service,
)
from tmsp_common.testing import Infra, ServiceProcess, free_port, unique
from tmsp_ingest.harness import Gateway
from tmsp_notifier.testing import RecordingSmtpServer, notifier_env
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
        infra.env(),
        prefix,
        f"{database}_auth",
        tls_dir,
        TMSP_AUTH_ACCESS_TOKEN_MINUTES="0.5",
        TMSP_AUTH_LOCKOUT_THRESHOLD="3",
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
    smtp = RecordingSmtpServer(free_port()).start()
    notifier_port = free_port()
    mail_env = notifier_env(
        infra_env=infra.env(),
        prefix=prefix,
        database=f"{database}_notifier",
        smtp_port=smtp.port,
        grpc_port=notifier_port,
        tls_dir=str(tls_dir),
        auth_target=auth_target,
    )
    mail_env["TMSP_NOTIFIER_AUTH_PUBLIC_KEYS"] = ""
    gateway = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        prefix,
        f"{database}_ingest",
        tmp_path_factory.mktemp("ingest"),
        extra_env={
            "TMSP_TLS_DIR": str(tls_dir),
            "TMSP_INGEST_AUTH_PUBLIC_KEYS": "",
            "TMSP_INGEST_AUTH_GRPC_TARGET": auth_target,
        },
    )
    procs: list[ServiceProcess] = []
    try:
        procs.append(start_service(auth_env))
        started = [
            ServiceProcess(module, env).start()
            for module, env in (
                ("tmsp_reporter", portal_env),
                ("tmsp_notifier", mail_env),
                ("tmsp_ingest", gateway.env()),
            )
        ]
        procs.extend(started)
        for proc in started:  # they start side by side
            proc.wait_for_log("service ready", timeout=90)
        yield Stack(
            infra,
            prefix,
            auth_target,
            tls_dir,
            {
                "TMSP_AUTH_TARGET": auth_target,
                "TMSP_REPORTER_TARGET": f"127.0.0.1:{portal_port}",
                "TMSP_NOTIFIER_TARGET": f"127.0.0.1:{notifier_port}",
                "TMSP_INGEST_TARGET": f"127.0.0.1:{gateway.ports['grpc']}",
                "TMSP_TLS_DIR": str(tls_dir),
            },
            account_id,
            name,
            admin_email,
            admin_password,
        )
    finally:
        with ThreadPoolExecutor() as pool:  # auth last: the others' ends overlap
            codes = list(pool.map(ServiceProcess.terminate, procs[1:]))
        codes.insert(0, procs[0].terminate() if procs else 0)
        smtp.stop()
        for proc, code in zip(procs, codes, strict=True):
            assert code == 0, proc.logs[-3000:]


@dataclass
class Client:
    """One user's ``tmsp``: its own config directory, the stack's targets."""

    stack: Stack
    config_dir: Path

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.stack.env,
            "TMSP_CLIENT_CONFIG_DIR": str(self.config_dir),
        }

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - our own entry point, arguments from the test
            [sys.executable, "-m", "tmsp_client", *args],
            input=stdin,
            env=self._env(),
            cwd=self.config_dir.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``tmsp args`` to talk to: stdin, stdout and stderr are pipes."""
        return subprocess.Popen(  # noqa: S603 - our own entry point, arguments from the test
            [sys.executable, "-m", "tmsp_client", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(),
            cwd=self.config_dir.parent,
            text=True,
        )

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


def operator(stack: Stack, tmp_path: Path) -> Client:
    op = client(stack, tmp_path, "operator")
    op.ok("login", "--email", OPERATOR_EMAIL, "--password-stdin", stdin=f"{OPERATOR_PASSWORD}\n")
    return op


def user_entry(op: Client, account_id: str, user_id: str) -> dict[str, Any]:
    users = op.json("users", "list", "--account", account_id)["users"]
    assert isinstance(users, list)
    entry: dict[str, Any] = next(u for u in users if u["user_id"] == user_id)
    return entry


async def test_operator_manages_accounts_and_their_users(
    stack: Stack, tmp_path: Path, auth_client: AuthClient
) -> None:
    op = operator(stack, tmp_path)

    # Add an account (Customer Accounts > Add), then edit it: only the fields named change.
    name = unique("Globex ")
    created = op.json(
        "account", "create", "--name", name, "--company", f"{name} Inc",
        "--services", "tda,tmi", "--valid-from", "2026-01-01", "--time-zone", "Europe/Berlin",
    )["account"]  # fmt: skip
    account_id = created["account_id"]
    assert created["services"] == ["tda", "tmi"] and created["time_zone"] == "Europe/Berlin"
    assert created["valid_from"] == "2026-01-01T00:00:00Z"
    edited = op.ok("account", "edit", account_id, "--company", f"{name} GmbH", "--time-zone", "UTC")
    assert "(changed: company_name, time_zone)" in edited
    assert f"{name} GmbH" in edited and "services:    tda, tmi" in edited
    # The portal's view, once the reporter has the change from the bus; `account ID` is
    # still `account show ID`.
    eventually(op, ("account", account_id), f"{name} GmbH")
    assert "time zone:" in op.ok("account", "show", account_id)
    # A validity date is cleared with `none`; the other stays.
    cleared = op.json(
        "account", "edit", account_id, "--valid-from", "none", "--valid-until", "2027-01-01"
    )
    assert "valid_from" not in cleared["account"]
    assert cleared["account"]["valid_until"] == "2027-01-01T00:00:00Z"

    # Invite its administrator (the link read from the notification topic), who then owns it.
    email = f"{unique('grace')}@globex.example"
    async with Mailbox(stack.infra.kafka_bootstrap, stack.prefix) as mail:
        invited = op.json(
            "users", "invite", "--account", account_id, "--email", email, "--name", "Grace",
            "--role", "administrator",
        )["user"]  # fmt: skip
        invitation = await mail.next(
            notifications_pb2.NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email
        )
    assert invitation.params["invite"] == "true"
    assert invited["roles"] == ["ROLE_ACCOUNT_ADMINISTRATOR"]
    user_id = invited["user_id"]
    # Grace sets her first password with the invitation's link; the link works once.
    grace = client(stack, tmp_path, "grace")
    password, link = new_password(), invitation.params["reset_url"]
    first = grace.ok("password", "reset", "--link-stdin", stdin=f"{link}\n{password}\n")
    assert first.strip() == "password set; log in with `tmsp login --email ...`"
    spent = grace.run("password", "reset", "--link-stdin", stdin=f"{link}\n{new_password()}\n")
    assert spent.returncode == 1 and spent.stderr.startswith("tmsp: ResetPassword: ")
    assert password not in spent.stderr + first
    owned = op.ok("account", "edit", account_id, "--managed-by", user_id)
    assert f"managed by:  {email}" in owned

    # Three wrong passwords lock Grace out; the operator unlocks her; then disables her.
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await auth_client.login(email, "not-her-password-1")
    assert "locked_until" in user_entry(op, account_id, user_id)
    assert op.ok("users", "unlock", user_id).strip() == f"user {user_id} unlocked"
    assert "locked_until" not in user_entry(op, account_id, user_id)
    await auth_client.session(email, password)

    # She changes it (signed in), forgets the new one and resets it by the emailed link.
    grace.ok("login", "--email", email, "--password-stdin", stdin=f"{password}\n")
    changed = new_password()
    out = grace.ok("password", "change", "--stdin", stdin=f"{password}\n{changed}\n")
    assert "password changed" in out
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_client.login(email, password)
    async with Mailbox(stack.infra.kafka_bootstrap, stack.prefix) as mail:
        asked = grace.ok("password", "forgot", "--email", email)
        assert asked.strip() == f"if {email} belongs to a user, a reset link is on its way there"
        nobody = grace.ok("password", "forgot", "--email", f"{unique('nobody')}@globex.example")
        assert "if " in nobody  # the same answer for an address nobody has
        reset_kind = notifications_pb2.NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET
        # the mailbox reads the topic from the start, its partitions in any order: the
        # invitation is there too
        mails = [await mail.next(reset_kind, email), await mail.next(reset_kind, email)]
    assert sorted(m.params["invite"] for m in mails) == ["false", "true"]
    mailed = next(m for m in mails if m.params["invite"] != "true")
    token = mailed.params["reset_url"].rsplit("token=", 1)[1]
    password = new_password()
    grace.ok("password", "reset", "--link-stdin", stdin=f"{token}\n{password}\n")  # the token alone
    await auth_client.session(email, password)
    assert "disabled" in op.ok("users", "disable", user_id)
    assert user_entry(op, account_id, user_id)["disabled"] is True
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_client.login(email, password)

    # Delete it: the account's name confirms.
    wrong = op.run("account", "delete", account_id, "--confirm", "not its name")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("tmsp: DeleteAccount: INVALID_ARGUMENT")
    assert "deleted" in op.ok("account", "delete", account_id, "--confirm", name)
    eventually(op, ("accounts", "--include-deleted"), f"{name} (deleted)")
    assert op.run("logout").returncode == 0


def issued(op: Client, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``tmsp products register ...`` once the gateway knows the account (from the bus)."""
    deadline = time.monotonic() + timeout
    while True:
        result = op.run("products", "register", *args)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return result
        assert "account unknown" in result.stderr, result.stderr
        time.sleep(0.5)


def test_operator_registers_products_and_keeps_their_credentials_private(
    stack: Stack, tmp_path: Path
) -> None:
    op = operator(stack, tmp_path)
    acct = ("--account", stack.account_id)

    # Register a Threat Discovery Appliance: its credentials only in the 0600 file.
    creds = tmp_path / "tda-hq.json"
    registered = issued(
        op, *acct, "--kind", "tda", "--name", "TDA-HQ", "--protocol", "ssh",
        "--email", stack.admin_email, "--upload-frequency", "600",
        "--credentials-file", str(creds),
    )  # fmt: skip
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    saved = json.loads(creds.read_text())
    product_id = saved["product_id"]
    assert saved["user_name"] and len(saved["password"]) == 24
    assert saved["client_certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in saved["client_private_key_pem"]
    assert saved["password"] not in registered.stdout + registered.stderr
    assert f"written to {creds}" in registered.stdout and "shown only once" in registered.stderr

    shown = op.ok("products", "show", product_id)
    assert "TDA-HQ" in shown and "upload every:       600s" in shown and "SSH" in shown
    updated = op.ok("products", "update", product_id, "--upload-frequency", "900",
                    "--expected-version", "1")  # fmt: skip
    assert "changed upload_frequency_seconds; active, version 2" in updated
    stale = op.run("products", "update", product_id, "--name", "TDA-X", "--expected-version", "1")
    assert stale.returncode == 1
    assert stale.stderr.startswith("tmsp: UpdateProduct: FAILED_PRECONDITION")

    # Rotate: the new credentials once, on stdout, with the warning on stderr.
    rotated = op.run("products", "rotate", product_id)
    assert rotated.returncode == 0, rotated.stderr
    password = next(
        line.split(":", 1)[1].strip()
        for line in rotated.stdout.splitlines()
        if line.startswith("password:")
    )
    assert password != saved["password"] and rotated.stdout.count(password) == 1
    assert "BEGIN CERTIFICATE" in rotated.stdout and "shown only once" in rotated.stderr
    assert password not in rotated.stderr

    # Disable, enable, deregister; the registry's list shows the state.
    assert "disabled" in op.ok("products", "disable", product_id)
    row = next(line for line in op.ok("products", "--registry", *acct).splitlines()
               if product_id in line)  # fmt: skip
    assert "TDA-HQ" in row and " disabled " in row and "900s" in row
    assert "enabled; active" in op.ok("products", "enable", product_id)
    assert "deregistered" in op.ok("products", "deregister", product_id)
    assert op.run("logout").returncode == 0


async def setup_two_factor(stack: Stack, admin: Client, qr: Path) -> tuple[str, list[str]]:
    """``tmsp 2fa setup`` as a person does it: the emailed confirmation code (read from the
    bus), then the authenticator's first code for the secret it printed. Returns the secret
    and the recovery codes."""
    async with Mailbox(stack.infra.kafka_bootstrap, stack.prefix) as mail:
        setup = admin.start("2fa", "setup", "--code-stdin", "--qr", str(qr))
        note = await mail.next(
            notifications_pb2.NotificationKind.NOTIFICATION_KIND_CONFIRMATION_CODE,
            stack.admin_email,
        )
    assert setup.stdin is not None and setup.stdout is not None
    setup.stdin.write(f"{note.params['code']}\n")
    setup.stdin.flush()
    shown = []
    while not (shown and shown[-1].startswith("otpauth uri:")):
        line = setup.stdout.readline()
        assert line, setup.communicate(timeout=30)
        shown.append(line)
    uri = shown[-1].split(":", 1)[1].strip()
    secret = secret_from_uri(uri)
    setup.stdin.write(f"{code_for_step(secret, 0)}\n")
    setup.stdin.close()
    out = setup.stdout.read()  # on from what readline buffered (communicate would lose it)
    err = setup.stderr.read() if setup.stderr else ""
    assert setup.wait(timeout=60) == 0, err
    assert f"a confirmation code was emailed to {stack.admin_email}" in err
    assert secret not in err and "shown only now" in err
    lines = out.splitlines()
    assert lines[0] == f"secret:      {secret}"
    return secret, lines[1:]


async def test_administrator_sets_up_2fa_and_works_the_account(
    stack: Stack, tmp_path: Path
) -> None:
    admin = client(stack, tmp_path, "admin")
    password_only = ("login", "--email", stack.admin_email, "--password-stdin")
    first = admin.run(*password_only, stdin=f"{stack.admin_password}\n")
    assert first.returncode == 0 and "turn it on with `tmsp 2fa setup`" in first.stderr

    # Two-factor setup from the command line; the QR code is private, the codes shown once.
    qr = tmp_path / "totp.png"
    secret, recovery = await setup_two_factor(stack, admin, qr)
    assert qr.read_bytes().startswith(b"\x89PNG") and stat.S_IMODE(qr.stat().st_mode) == 0o600
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert admin.run("logout").returncode == 0
    login = (*password_only, "--totp-stdin")

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
    assert secret not in admin.session_file.read_text()

    # Their own account: its trail shows 2FA on and the login with the second factor.
    trail = admin.ok("security-events")
    assert "two-factor-enabled" in trail and "second-factor-failed" in trail
    assert "login-succeeded" in trail
    assert stack.account_name in admin.ok("account")
    assert admin.ok("incidents").splitlines()[0].startswith("INCIDENT")
    assert admin.ok("endpoints").splitlines()[0].startswith("ENDPOINT")
    assert admin.ok("products").splitlines()[0].startswith("PRODUCT")

    # Report recipients and schedule (administrators), and what only operators may do.
    assert "cfo@acme.example" in admin.ok("recipients", "add", "CFO@acme.example")
    assert "cfo@acme.example" in admin.ok("recipients", "list")
    assert admin.ok("recipients", "remove", "cfo@acme.example").strip() == "(no report recipients)"
    assert "weekly executive:     on" in admin.ok("reports", "schedule")
    changed = admin.ok("reports", "schedule", "set", "--no-weekly", "--time-zone", "Europe/Berlin")
    assert "weekly executive:     off" in changed and "Europe/Berlin" in changed
    schedule = admin.json("reports", "schedule")["schedule"]
    assert (schedule["daily_administrative"], schedule["weekly_executive"]) == (True, False)
    assert "changed: time_zone" in admin.ok("account", "edit", "--time-zone", "Europe/Berlin")
    rename = admin.run("account", "edit", "--name", "Not Allowed")
    assert rename.returncode == 1
    assert rename.stderr.startswith("tmsp: UpdateAccount: PERMISSION_DENIED")
    denied = admin.run("tasks", "create", "--product", "p-1", "--kind", "forensic")
    assert denied.returncode == 1
    assert denied.stderr.startswith("tmsp: CreateMitigationTask: PERMISSION_DENIED")

    # Event notifications: every configurable event, one changed; what the notifier mailed.
    events = admin.ok("notifications").splitlines()
    assert events[0].startswith("EVENT") and len(events) == 8
    offline = admin.ok(
        "notifications", "set", "--event", "product-offline", "--disabled",
        "--recipients", "soc@acme.example,noc@acme.example", "--max-per-hour", "4",
    ).splitlines()[1]  # fmt: skip
    assert offline.split()[:2] == ["product-offline", "no"]
    assert "soc@acme.example, noc@acme.example" in offline
    kinds = admin.json("notifications", "show")["settings"]
    assert isinstance(kinds, list)
    stored = next(k for k in kinds if k["kind"] == "NOTIFICATION_KIND_PRODUCT_OFFLINE")
    assert (stored["enabled"], stored["max_per_hour"], stored["version"]) == (False, 4, "1")
    sent = eventually(admin, ("notifications", "deliveries"), "Two-Factor Authentication enabled")
    assert "confirmation code" in sent and stack.admin_email in sent

    # New recovery codes (the old ones stop working); one of them logs in instead of the app.
    fresh = admin.ok("2fa", "recovery-codes", "--password-stdin", stdin=f"{stack.admin_password}\n")
    codes = fresh.split()
    assert len(codes) == 10 and not set(codes) & set(recovery)
    assert admin.run("logout").returncode == 0
    spent = admin.run(*login, stdin=f"{stack.admin_password}\n{recovery[0]}\n")
    assert spent.returncode == 1
    by_code = admin.run(*login, stdin=f"{stack.admin_password}\n{codes[0]}\n")
    assert by_code.returncode == 0, by_code.stderr
    assert "recovery code used: 9 left" in by_code.stderr

    # Two-factor off again: the password alone logs in.
    off = admin.ok("2fa", "disable", "--password-stdin", stdin=f"{stack.admin_password}\n")
    assert off.strip() == f"two-factor authentication is off for {stack.admin_email}"
    assert admin.run("logout").returncode == 0
    again = admin.run(*password_only, stdin=f"{stack.admin_password}\n")
    assert again.returncode == 0, again.stderr
    assert admin.run("logout").returncode == 0

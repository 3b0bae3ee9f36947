"""The main job of TMSP, end to end, against the running stack (``make demo``).

Run after ``scripts/stack.py up``. Step by step, as a security team would see it:

1. the provider's operator creates a customer account; its administrator accepts the
   emailed invitation, logs in, and enables two-factor authentication (seed 000: emailed
   confirmation code -> provisioning URI -> first TOTP code), then logs in with password +
   TOTP and sees the account's security trail (logins, two-factor enabled);
2. the operator registers two Threat Discovery Appliances (one uploading over SSH, one over
   SSL) and a Threat Mitigator, and gets their credentials;
3. the simulated appliances test their connection, send heartbeats and upload CEF
   detection logs (SFTP and HTTPS) and mitigation results (one failed cleanup), crafted to
   trigger the default Sigma rule pack;
4. the administrator sees the incidents (with their chain of events), the nonconforming
   endpoint and the appliances' liveness in the portal (the reporter's read API), and the
   notifier's mails arrive in the SMTP sink;
5. the provider's operator adds a custom cleanup pattern to the account's catalogue and
   deploys it to the Threat Mitigator, which gets the task with a heartbeat, downloads the
   pattern from the log server (checking its SHA-256), cleans the endpoint and acknowledges;
   the endpoint conforms again. The operator then requests forensic data of that endpoint;
   the mitigator uploads it over SFTP and the operator downloads it from the portal; the
   administrator resolves the incident;
6. the Customer Accounts row, an on-demand report (PDF downloaded) and its report-ready
   mail; then a summary of what happened and where to look further.

Every run creates a new account (unique names), so it can run again and again. Any failure
ends with one line naming what broke, and a non-zero exit. The services' own environment
configures it (``TMSP_TLS_DIR``, ``TMSP_AUTH_GRPC_PORT``, ``TMSP_INGEST_*_PORT``,
``TMSP_REPORTER_GRPC_PORT``, ``TMSP_CORRELATOR_RULES_DIR``...; the auth CLI it runs reads
auth's whole environment), plus ``TMSP_DEMO_MAIL_DIR`` (the SMTP sink's directory, default
.local/mail), ``TMSP_DEMO_OUT_DIR`` (default .local/demo) and ``TMSP_DEMO_TIMEOUT_S`` (how
long each wait may take, default 120).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import io
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncssh
import grpc
import pyotp

from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc
from tmsp.events.v1 import auth_pb2 as audit_pb2
from tmsp.events.v1 import detections_pb2, incidents_pb2, products_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tmsp.reporter.v1 import reporter_pb2, reporter_pb2_grpc
from tmsp_auth.config import AuthSettings
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.settings import load_settings
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.rules import load_rule_directory
from tmsp_ingest.config import IngestSettings
from tmsp_reporter.config import ReporterSettings

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_FILE = "operator.json"
HEARTBEAT_S = 60
"""The heartbeat interval the appliances are registered with."""
SEVERITY_NAME = {
    detections_pb2.SEVERITY_LOW: "LOW",
    detections_pb2.SEVERITY_MEDIUM: "MEDIUM",
    detections_pb2.SEVERITY_HIGH: "HIGH",
    detections_pb2.SEVERITY_CRITICAL: "CRITICAL",
}


STATUS_NAME = {
    incidents_pb2.INCIDENT_STATUS_NEW: "new",
    incidents_pb2.INCIDENT_STATUS_INVESTIGATING: "investigating",
    incidents_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
    incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE: "false positive",
}


class DemoError(Exception):
    """What broke, in one line."""


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Where everything is, read from the same environment the services read."""

    tls_dir: str
    auth_target: str
    ingest_host: str
    ingest_grpc_port: int
    sftp_port: int
    https_port: int
    status_port: int
    reporter_target: str
    rules_dir: Path
    offline_multiple: float
    mail_dir: Path
    out_dir: Path
    timeout_s: float

    @classmethod
    def from_env(cls) -> Config:
        auth = load_settings(AuthSettings)
        ingest = load_settings(IngestSettings)
        reporter = load_settings(ReporterSettings)
        correlator = load_settings(CorrelatorSettings)
        return cls(
            tls_dir=ingest.tls_dir,
            auth_target=f"127.0.0.1:{auth.grpc_port}",
            ingest_host="127.0.0.1",
            ingest_grpc_port=ingest.grpc_port,
            sftp_port=ingest.sftp_port,
            https_port=ingest.https_port,
            status_port=ingest.status_port,
            reporter_target=f"127.0.0.1:{reporter.grpc_port}",
            rules_dir=Path(correlator.rules_dir),
            offline_multiple=correlator.offline_multiple,
            mail_dir=Path(os.environ.get("TMSP_DEMO_MAIL_DIR", str(ROOT / ".local" / "mail"))),
            out_dir=Path(os.environ.get("TMSP_DEMO_OUT_DIR", str(ROOT / ".local" / "demo"))),
            timeout_s=float(os.environ.get("TMSP_DEMO_TIMEOUT_S", "120")),
        )

    @property
    def ca_file(self) -> Path:
        return Path(self.tls_dir) / "ca.pem"


# -- display ---------------------------------------------------------------------------

TTY = sys.stdout.isatty()


def _style(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


def header(number: int, total: int, title: str) -> None:
    print()
    print(_style(f"[{number}/{total}] {title}", "1;36"))


def ok(text: str) -> None:
    print(f"  {_style('ok', '32')}  {text}")


def info(text: str) -> None:
    print(f"      {text}")


class Progress:
    """One status line rewritten in place on a terminal, a line per change otherwise."""

    def __init__(self, label: str, every_s: float = 10.0) -> None:
        self.label = label
        self.every_s = every_s
        self.last = ""
        self.printed_at = 0.0

    def update(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if TTY:
            print(f"\r\033[K  ..  {self.label}: {text}", end="", flush=True)
        elif time.monotonic() - self.printed_at >= self.every_s:
            self.printed_at = time.monotonic()
            print(f"  ..  {self.label}: {text}", flush=True)

    def done(self) -> None:
        if TTY:
            print("\r\033[K", end="", flush=True)


_T = TypeVar("_T")


async def poll_until(
    probe: Callable[[], Awaitable[_T]],
    done: Callable[[_T], bool],
    *,
    label: str,
    waiting: str,
    timeout_s: float,
    failure: Callable[[_T], str],
    interval_s: float = 0.5,
) -> _T:
    """``probe()`` again every ``interval_s`` until ``done`` holds for what it returned,
    showing ``label: waiting`` meanwhile; DemoError(``failure(last)``) after ``timeout_s``."""
    progress = Progress(label)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            value = await probe()
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise DemoError(failure(value))
            progress.update(waiting)
            await asyncio.sleep(interval_s)
    finally:
        progress.done()


async def until_portal_knows(call: Callable[[], Awaitable[_T]], timeout_s: float) -> _T:
    """``call()``, again while the portal answers NOT_FOUND or FAILED_PRECONDITION (it
    learns of accounts and products from the bus, a moment after they were created)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            lagging = exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            if not lagging or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Turn whatever fails inside into one DemoError line naming ``what``."""
    try:
        yield
    except DemoError:
        raise
    except grpc.aio.AioRpcError as exc:
        raise DemoError(f"{what}: {exc.code().name} {exc.details()}") from exc
    except (aiohttp.ClientError, asyncssh.Error, OSError) as exc:
        raise DemoError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise DemoError(f"{what}: timed out") from exc


# -- the mail sink ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    path: Path
    to: str
    subject: str
    text: str
    attachments: tuple[str, ...] = ()


class MailSink:
    """The notifier's SMTP sink writes each mail to a file; this reads them back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[Path, Mail] = {}

    def all_to(self, recipient: str) -> list[Mail]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.eml")):
            mail = self._cache.get(path)
            if mail is None:
                msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert isinstance(msg, EmailMessage)  # noqa: S101 - policy.default makes one
                body = msg.get_body(preferencelist=("plain",))
                text = body.get_content() if body is not None else ""
                files = tuple(str(a.get_filename() or "") for a in msg.iter_attachments())
                mail = Mail(path, str(msg.get("To", "")), str(msg.get("Subject", "")), text, files)
                self._cache[path] = mail
            if recipient.lower() in mail.to.lower():
                found.append(mail)
        return found

    async def wait_for(
        self,
        recipient: str,
        subject_prefix: str | tuple[str, ...],
        timeout: float,
        seen: set[Path],
    ) -> Mail:
        """The first mail to ``recipient`` whose subject starts with ``subject_prefix`` (or
        one of them) and that is not in ``seen`` (which it joins)."""
        prefixes = (subject_prefix,) if isinstance(subject_prefix, str) else subject_prefix
        label = " or ".join(repr(p) for p in prefixes)
        progress = Progress(f"waiting for the mail {label}")
        deadline = time.monotonic() + timeout
        while True:
            for mail in self.all_to(recipient):
                if mail.path not in seen and mail.subject.startswith(prefixes):
                    progress.done()
                    seen.add(mail.path)
                    return mail
            left = deadline - time.monotonic()
            if left <= 0:
                progress.done()
                raise DemoError(
                    f"no mail {label} to {recipient} arrived in {self.directory} "
                    f"within {timeout:.0f}s (is the notifier running and the SMTP sink up?)"
                )
            progress.update(f"{left:.0f}s left")
            await asyncio.sleep(0.3)


# -- the scenario ----------------------------------------------------------------------


@dataclass(frozen=True)
class RulePack:
    """The correlator's rules (loaded by its own loader) as the demo needs them:
    name -> title, id -> name."""

    directory: Path
    titles: dict[str, str]
    names: dict[str, str]

    @classmethod
    def load(cls, directory: Path) -> RulePack:
        rules = load_rule_directory(directory)
        metas = [r.meta for r in rules.detections.values()]
        metas += [r.meta for r in rules.correlations.values()]
        return cls(directory, {m.name: m.title for m in metas}, {m.rule_id: m.name for m in metas})


EXPECTED_RULES = [
    "tmsp_high_severity_burst",
    "tmsp_critical_detection",
    "tmsp_c2_then_lateral",
    "tmsp_mitigation_failed",
    "tmsp_detected_then_mitigation_failed",
]
"""The incidents the scenario's events must raise (default rule pack)."""

BURST_HOST, C2_HOST, FAILED_HOST = "fin-ws-07", "eng-ws-12", "hr-lt-03"


TDA, TMI = "Threat Discovery Appliance", "Threat Mitigator"

# (device product, signature id, name, CEF severity, seconds after t0, extension)
# fmt: off
HQ_DETECTIONS = [
    (TDA, "1001", "TROJ_AGENTTESLA_DLD", 8, 0,
     f"shost={BURST_HOST} src=10.10.4.7 dst=203.0.113.50 dpt=443 cat=Trojan download"),
    (TDA, "1002", "TROJ_AGENTTESLA", 8, 45,
     f"shost={BURST_HOST} src=10.10.4.7 dst=203.0.113.50 dpt=443 cat=Malware execution"),
    (TDA, "1003", "Credential dumping tool", 9, 90,
     f"shost={BURST_HOST} src=10.10.4.7 cat=Hacktool"),
    (TDA, "1004", "TROJ_EMOTET.SM", 5, 20,
     f"shost={FAILED_HOST} src=10.10.9.3 dst=198.51.100.23 dpt=8080 cat=Trojan"),
]
"""TDA-HQ over SFTP: three high-severity detections on one workstation within two minutes,
the last one critical (-> "several high-severity detections", "critical detection"), and a
medium one on a laptop."""

BRANCH_DETECTIONS = [
    (TDA, "2001", "Cobalt Strike beacon", 8, 30,
     f"shost={C2_HOST} src=10.20.1.12 dst=192.0.2.77 dpt=443 cat=C&C callback"),
    (TDA, "2002", "MS17-010 EternalBlue", 7, 150,
     f"shost={C2_HOST} src=10.20.1.12 dst=10.20.1.40 dpt=445 cat=Network exploit"),
]
"""TDA-Branch over HTTPS: a command-and-control callback, then SMB exploitation of another
internal host from the same endpoint (-> "C2 callback followed by lateral movement")."""

MITIGATION_RESULTS = [
    (TMI, "3001", "TROJ_EMOTET.SM", 6, 240,
     f"shost={FAILED_HOST} src=10.10.9.3 act=clean outcome=failed reason=file locked"),
    (TMI, "3002", "TROJ_AGENTTESLA", 6, 250,
     f"shost={BURST_HOST} src=10.10.4.7 act=clean outcome=cleaned"),
]
"""TMI over HTTPS: the trojan on the laptop could not be cleaned (-> nonconforming endpoint,
"Threat Mitigator could not clean a threat", "threat detected and mitigation failed"); the
workstation's was."""

# fmt: on

NOT_A_RECORD = "this line is not a log record"
"""Sent with TDA-Branch's upload: counted as rejected (and kept on the rejected topic)."""

Record = tuple[str, str, str, int, int, str]


def cef_file(records: list[Record], t0: float, *extra_lines: str) -> bytes:
    """CEF lines; ``rt`` (event time, epoch ms) is ``t0`` plus each record's offset."""
    lines = [
        f"CEF:0|TMSP Demo|{product}|2.5|{sig}|{name}|{sev}|rt={int((t0 + dt) * 1000)} {ext}"
        for product, sig, name, sev, dt, ext in records
    ]
    return ("\n".join([*lines, *extra_lines]) + "\n").encode()


# -- clients ---------------------------------------------------------------------------


@dataclass
class Clients:
    cfg: Config
    chans: list[grpc.aio.Channel] = field(default_factory=list)
    auth: Any = None
    """``AuthServiceStub`` (typed Any: the generated stubs have no async annotations)."""
    accounts: Any = None
    products: Any = None
    portal: Any = None
    """``ReporterServiceStub``: the portal's read API, reports."""

    def __post_init__(self) -> None:
        auth_chan = channel(self.cfg.auth_target, tls=True, tls_dir=self.cfg.tls_dir)
        ingest_chan = channel(
            f"{self.cfg.ingest_host}:{self.cfg.ingest_grpc_port}",
            tls=True,
            tls_dir=self.cfg.tls_dir,
        )
        reporter_chan = channel(self.cfg.reporter_target, tls=True, tls_dir=self.cfg.tls_dir)
        self.chans = [auth_chan, ingest_chan, reporter_chan]
        self.portal = reporter_pb2_grpc.ReporterServiceStub(reporter_chan)
        self.auth = auth_pb2_grpc.AuthServiceStub(auth_chan)
        self.accounts = auth_pb2_grpc.AccountServiceStub(auth_chan)
        self.products = ingest_pb2_grpc.ProductRegistryServiceStub(ingest_chan)

    async def close(self) -> None:
        for chan in self.chans:
            await chan.close()


def md(session: auth_pb2.Session) -> tuple[tuple[str, str], ...]:
    return bearer(session.access_token)


@dataclass
class Signed:
    """A logged-in user's session, refreshed before its 5-minute access token expires."""

    auth: Any
    session: auth_pb2.Session

    async def md(self) -> tuple[tuple[str, str], ...]:
        expires = self.session.access_token_expires_at.ToDatetime(tzinfo=UTC)
        if expires - datetime.now(UTC) < timedelta(seconds=60):
            with stage("auth: Refresh"):
                answer = await self.auth.Refresh(
                    auth_pb2.RefreshRequest(refresh_token=self.session.refresh_token), timeout=30
                )
                self.session = answer.session
        return md(self.session)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def check_services(cfg: Config) -> None:
    host, port = cfg.auth_target.rsplit(":", 1)
    needed = {
        "auth gRPC": (host, int(port)),
        "ingest gRPC": (cfg.ingest_host, cfg.ingest_grpc_port),
        "ingest SFTP": (cfg.ingest_host, cfg.sftp_port),
        "ingest HTTPS": (cfg.ingest_host, cfg.https_port),
        "ingest status server": (cfg.ingest_host, cfg.status_port),
        "reporter gRPC": (
            cfg.reporter_target.rsplit(":", 1)[0],
            int(cfg.reporter_target.rsplit(":", 1)[1]),
        ),
    }
    for name, (h, p) in needed.items():
        if not reachable(h, p):
            raise DemoError(
                f"{name} is not reachable on {h}:{p}; start the stack first "
                "(scripts/stack.py up, or make demo)"
            )


def secret_file(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)


# -- steps -----------------------------------------------------------------------------


@dataclass
class Run:
    """What the demo did, for the summary."""

    cfg: Config
    tag: str
    rules: RulePack
    account: auth_pb2.Account | None = None
    admin_email: str = ""
    admin_password: str = ""
    totp_secret: str = ""
    products: list[tuple[str, ingest_pb2.RegisterProductResponse]] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    incidents: dict[str, incidents_pb2.Incident] = field(default_factory=dict)
    nonconforming: dict[str, incidents_pb2.NonconformingEndpoint] = field(default_factory=dict)
    portal_products: dict[str, reporter_pb2.Product] = field(default_factory=dict)
    provider_account_id: str = ""
    flagged: dict[str, incidents_pb2.NonconformingEndpoint] = field(default_factory=dict)
    """The endpoints that were nonconforming once the incidents were in."""
    remediated: list[str] = field(default_factory=list)
    forensics: list[str] = field(default_factory=list)
    """The forensic data files the portal received, in words."""
    mails: list[Mail] = field(default_factory=list)
    seen_mail: set[Path] = field(default_factory=set)
    pdf: Path | None = None

    @property
    def run_dir(self) -> Path:
        return self.cfg.out_dir / self.tag

    @property
    def account_id(self) -> str:
        assert self.account is not None  # noqa: S101 - set by step 1
        return self.account.account_id


def operator_login_material(cfg: Config) -> tuple[str, str]:
    """The demo's provider operator (created once with auth's bootstrap CLI, idempotent);
    its email and password live in <out_dir>/operator.json (0600)."""
    path = cfg.out_dir / OPERATOR_FILE
    try:
        saved = json.loads(path.read_text())
        return str(saved["email"]), str(saved["password"])
    except (OSError, ValueError, KeyError):
        pass
    email_addr = f"demo-operator-{secrets.token_hex(3)}@provider.example.com"
    password = secrets.token_urlsafe(18)
    secret_file(path, {"email": email_addr, "password": password})
    return email_addr, password


def bootstrap_operator(email_addr: str, password: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed module, our own arguments
        [
            sys.executable,
            "-m",
            "tmsp_auth.entrypoints.cli",
            "bootstrap-operator",
            "--email",
            email_addr,
            "--password-stdin",
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DemoError(f"auth bootstrap-operator CLI failed ({result.returncode}): {last}")
    return result.stdout.strip()


async def login(c: Clients, email_addr: str, password: str) -> auth_pb2.LoginResponse:
    response: auth_pb2.LoginResponse = await c.auth.Login(
        auth_pb2.LoginRequest(email=email_addr, password=password), timeout=30
    )
    return response


async def step_account(c: Clients, run: Run) -> tuple[auth_pb2.Session, auth_pb2.Session]:
    """Operator -> account -> invited administrator -> 2FA -> password + TOTP login."""
    cfg = run.cfg
    with stage("auth: provider operator"):
        op_email, op_password = operator_login_material(cfg)
        out = await asyncio.to_thread(bootstrap_operator, op_email, op_password)
        ok(f"provider operator {op_email} ({out.split(':')[0]})")
        try:
            answer = await login(c, op_email, op_password)
        except grpc.aio.AioRpcError as exc:
            raise DemoError(
                f"auth: the demo operator {op_email} cannot log in ({exc.details()}); its "
                f"password is in {cfg.out_dir / OPERATOR_FILE}: remove that file to make a new one"
            ) from exc
        if not answer.HasField("session"):
            raise DemoError(f"auth: the demo operator {op_email} has 2FA on; cannot log in")
        operator = answer.session
        ok("operator logged in (password)")

    with stage("auth: CreateAccount"):
        now = datetime.now(UTC)
        account = auth_pb2.Account(
            name=f"Demo Corp {run.tag}",
            company_name="Demo Corporation Ltd",
            services=["threat-discovery", "threat-mitigation"],
            time_zone="UTC",
        )
        account.valid_from.CopyFrom(to_timestamp(now))
        account.valid_until.CopyFrom(to_timestamp(now + timedelta(days=365)))
        created = await c.accounts.CreateAccount(
            auth_pb2.CreateAccountRequest(account=account), metadata=md(operator), timeout=30
        )
        run.account = created.account
        ok(
            f"customer account {run.account.name!r} ({run.account_id}), services "
            f"{', '.join(run.account.services)}, valid for a year"
        )

    with stage("auth: CreateUser (account administrator invitation)"):
        run.admin_email = f"secops-{run.tag}@demo-corp.example.com"
        user = await c.accounts.CreateUser(
            auth_pb2.CreateUserRequest(
                account_id=run.account_id,
                email=run.admin_email,
                display_name="Dana Security",
                roles=[auth_pb2.ROLE_ACCOUNT_ADMINISTRATOR],
            ),
            metadata=md(operator),
            timeout=30,
        )
        user_id = user.user.user_id
        ok(f"administrator {run.admin_email} invited (role: account administrator)")

    sink = MailSink(cfg.mail_dir)
    invite = await sink.wait_for(
        run.admin_email,
        ("Your invitation to TMSP", "Reset your TMSP password"),
        cfg.timeout_s,
        run.seen_mail,
    )
    run.mails.append(invite)
    match = re.search(r"token=([A-Za-z0-9_\-]+)", invite.text)
    if match is None:
        raise DemoError(f"the invitation mail {invite.path} carries no link token")
    ok(f"invitation mail arrived ({invite.path.name}); the administrator opens the link")
    with stage("auth: ResetPassword (accept the invitation)"):
        run.admin_password = f"demo-{secrets.token_urlsafe(12)}"
        await c.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=match.group(1), new_password=run.admin_password),
            timeout=30,
        )
        ok("administrator chose a password")
    with stage("auth: UpdateAccount (Managed By)"):
        update = auth_pb2.Account(account_id=run.account_id, managed_by_user_id=user_id)
        updated = await c.accounts.UpdateAccount(
            auth_pb2.UpdateAccountRequest(account=update, update_mask=["managed_by_user_id"]),
            metadata=md(operator),
            timeout=30,
        )
        run.account = updated.account
        ok(f"account managed by {run.account.managed_by_email} (gets its notifications)")

    with stage("auth: seed-000 two-factor setup"):
        first = await login(c, run.admin_email, run.admin_password)
        if not first.HasField("session"):
            raise DemoError("auth: a new administrator was asked for a second factor")
        session = first.session
        ok(
            f"administrator logged in; 'enable two-factor authentication?' offered: "
            f"{first.offer_two_factor_setup}"
        )
        await c.auth.SetTwoFactorPrompt(
            auth_pb2.SetTwoFactorPromptRequest(
                choice=auth_pb2.TWO_FACTOR_PROMPT_CONTINUE_TO_SETTINGS
            ),
            metadata=md(session),
            timeout=30,
        )
        await c.auth.SendConfirmationEmail(
            auth_pb2.SendConfirmationEmailRequest(), metadata=md(session), timeout=30
        )
        ok("'Continue to 2FA settings' -> confirmation code emailed")
    code_mail = await sink.wait_for(
        run.admin_email, "Your TMSP confirmation code", cfg.timeout_s, run.seen_mail
    )
    run.mails.append(code_mail)
    found = re.search(r"\b(\d{8})\b", code_mail.text)
    if found is None:
        raise DemoError(f"the confirmation mail {code_mail.path} carries no 8-digit code")
    ok(f"confirmation code read from the mail ({code_mail.path.name})")
    with stage("auth: ConfirmSetupCode / EnableTwoFactor"):
        prov = await c.auth.ConfirmSetupCode(
            auth_pb2.ConfirmSetupCodeRequest(confirmation_code=found.group(1)),
            metadata=md(session),
            timeout=30,
        )
        run.totp_secret = parse_qs(urlsplit(prov.otpauth_uri).query)["secret"][0]
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "totp-qr.png").write_bytes(prov.qr_png)
        label = prov.otpauth_uri.split("?", 1)[0]
        ok(f"provisioning URI {label}?secret=... (QR code: {run.run_dir / 'totp-qr.png'})")
        totp = pyotp.TOTP(run.totp_secret)
        enabled = await c.auth.EnableTwoFactor(
            auth_pb2.EnableTwoFactorRequest(totp_code=totp.now()),
            metadata=md(session),
            timeout=30,
        )
        ok(
            f"first authenticator code accepted: 2FA on, {len(enabled.recovery_codes)} "
            "recovery codes issued (shown once)"
        )
    with stage("auth: login with password + TOTP"):
        second = await login(c, run.admin_email, run.admin_password)
        if not second.challenge_id:
            raise DemoError("auth: 2FA is on but the login asked for no second factor")
        # A code is accepted once and only if newer than the last one used, so the demo
        # takes the authenticator's next code (the server allows one step of clock drift)
        # instead of waiting up to 30 s for it.
        verified = await c.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(
                challenge_id=second.challenge_id, totp_code=totp.at(time.time() + 30)
            ),
            timeout=30,
        )
        if not verified.HasField("session"):
            raise DemoError("auth: VerifySecondFactor returned no session")
        admin: auth_pb2.Session = verified.session
        ok("administrator logged in with password + TOTP (second factor: otp)")
    with stage("auth: ListSecurityEvents"):

        async def trail() -> list[auth_pb2.SecurityEvent]:
            answer = await c.accounts.ListSecurityEvents(
                auth_pb2.ListSecurityEventsRequest(), metadata=md(admin), timeout=30
            )
            return list(answer.events)

        def logged_in_with_2fa(events: list[auth_pb2.SecurityEvent]) -> bool:
            kinds = [e.kind for e in events]  # newest first
            enabled = audit_pb2.AUTH_AUDIT_KIND_TWO_FACTOR_ENABLED
            return (
                enabled in kinds
                and audit_pb2.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED in (kinds[: kinds.index(enabled)])
            )

        events = await poll_until(
            trail,
            logged_in_with_2fa,
            label="waiting for the account's security trail",
            waiting="not recorded yet",
            timeout_s=cfg.timeout_s,
            failure=lambda _e: (
                f"after {cfg.timeout_s:.0f}s auth's ListSecurityEvents shows no login "
                "after the two-factor enablement (auth stores its audit topic)"
            ),
        )
        words = [
            audit_pb2.AuthAuditKind.Name(e.kind).removeprefix("AUTH_AUDIT_KIND_").lower()
            for e in events
        ]
        ok(
            f"the account's security trail, as its administrator sees it: {len(events)} "
            f"events, newest first: {', '.join(w.replace('_', ' ') for w in words)}"
        )
    secret_file(
        run.run_dir / "administrator.json",
        {
            "email": run.admin_email,
            "password": run.admin_password,
            "totp_secret": run.totp_secret,
            "account_id": run.account_id,
        },
    )
    return operator, admin


async def step_products(c: Clients, run: Run, operator: auth_pb2.Session) -> None:
    specs = [
        (
            "TDA-HQ",
            products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
            products_pb2.UPLOAD_PROTOCOL_SSH,
        ),
        (
            "TDA-Branch",
            products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
            products_pb2.UPLOAD_PROTOCOL_SSL,
        ),
        ("TMI-HQ", products_pb2.PRODUCT_KIND_THREAT_MITIGATOR, products_pb2.UPLOAD_PROTOCOL_SSL),
    ]
    for name, kind, protocol in specs:
        with stage(f"ingest: RegisterProduct {name}"):
            request = ingest_pb2.RegisterProductRequest(
                request_id=uuid.uuid4().hex,  # makes the retries below safe
                account_id=run.account_id,
                kind=kind,
                name=f"{name}",
                protocol=protocol,
                upload_frequency_seconds=300,
                registration_email=run.admin_email,
                upload_bandwidth_bytes_per_second=1_048_576,
                heartbeat_interval_seconds=HEARTBEAT_S,
            )
            deadline = time.monotonic() + 60
            progress = Progress(f"registering {name}")
            while True:
                try:
                    reg: ingest_pb2.RegisterProductResponse = await c.products.RegisterProduct(
                        request, metadata=md(operator), timeout=30
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    # the gateway learns of the account from the accounts topic; the bus
                    # may be briefly unavailable (the request id makes a retry safe)
                    waiting = "account unknown" in (exc.details() or "")
                    waiting |= exc.code() is grpc.StatusCode.UNAVAILABLE
                    if not waiting or time.monotonic() > deadline:
                        progress.done()
                        raise
                    progress.update("the gateway has not seen the new account yet")
                    await asyncio.sleep(0.5)
            progress.done()
            run.products.append((name, reg))
            kind_name = products_pb2.ProductKind.Name(kind).removeprefix("PRODUCT_KIND_")
            proto_name = products_pb2.UploadProtocol.Name(protocol).removeprefix("UPLOAD_PROTOCOL_")
            ok(
                f"{name}: {kind_name.replace('_', ' ').lower()} over {proto_name}, product "
                f"{reg.product.product_id}, user {reg.credentials.user_name}, password and "
                "client certificate issued once"
            )
    secret_file(
        run.run_dir / "products.json",
        {
            name: {
                "product_id": r.product.product_id,
                "user_name": r.credentials.user_name,
                "password": r.credentials.password,
            }
            for name, r in run.products
        },
    )
    info(f"credentials saved to {run.run_dir / 'products.json'} (0600) to try the servers")


def ssl_context(cfg: Config) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cfg.ca_file))


def basic(reg: ingest_pb2.RegisterProductResponse, password: str = "") -> dict[str, str]:
    """HTTP Basic with the product's issued credentials (or another password)."""
    secret = password or reg.credentials.password
    return {"Authorization": aiohttp.encode_basic_auth(reg.credentials.user_name, secret)}


@dataclass
class Appliance:
    """A simulated registered product talking to the log and status servers."""

    name: str
    reg: ingest_pb2.RegisterProductResponse
    cfg: Config
    http: aiohttp.ClientSession

    def _url(self, port: int, path: str) -> str:
        return f"https://{self.cfg.ingest_host}:{port}{path}"

    async def test_connection(self, port: int, password: str = "") -> tuple[int, str]:
        async with self.http.get(
            self._url(port, "/v1/test-connection"), headers=basic(self.reg, password)
        ) as resp:
            return resp.status, str((await resp.json()).get("status"))

    async def heartbeat(
        self, compliance: bool | None = None, acknowledged: Sequence[str] = ()
    ) -> dict[str, Any]:
        beat: dict[str, Any] = {
            "product_version": "2.5.1",
            "uptime_seconds": 86_400,
            "counters": {"sessions_inspected": 120_000},
            "acknowledged_task_ids": list(acknowledged),
        }
        if compliance is not None:
            beat["security_compliance_enabled"] = compliance
        async with self.http.post(
            self._url(self.cfg.status_port, "/v1/heartbeat"), json=beat, headers=basic(self.reg)
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise DemoError(f"heartbeat of {self.name}: {resp.status} {answer}")
        return answer

    async def upload_https(self, file_name: str, data: bytes) -> dict[str, Any]:
        """``POST /v1/uploads``; the 202 comes once Kafka has every record."""
        async with self.http.post(
            self._url(self.cfg.https_port, "/v1/uploads"),
            params={"file": file_name},
            data=data,
            headers=basic(self.reg),
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 202:
                raise DemoError(f"HTTPS upload of {self.name}: {resp.status} {answer}")
        return answer

    async def upload_sftp(self, file_name: str, data: bytes) -> None:
        """Closing the written file is the commit point: it returns once Kafka has it all.
        A ``file_name`` with directories (``forensics/<task>/<file>``) creates them."""
        creds = self.reg.credentials
        async with (
            asyncssh.connect(
                self.cfg.ingest_host,
                self.cfg.sftp_port,
                username=creds.user_name,
                password=creds.password,
                known_hosts=None,
                client_keys=None,
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            if "/" in file_name:
                await sftp.makedirs(file_name.rpartition("/")[0], exist_ok=True)
            async with sftp.open(file_name, "wb") as fh:
                await fh.write(data)

    async def download_pattern(self, name: str) -> tuple[int, bytes]:
        """``GET /v1/cleanup-patterns/<name>`` from the log server (status, body)."""
        async with self.http.get(
            self._url(self.cfg.https_port, f"/v1/cleanup-patterns/{name}"),
            headers=basic(self.reg),
        ) as resp:
            return resp.status, await resp.read()


@asynccontextmanager
async def appliances(run: Run) -> AsyncIterator[list[Appliance]]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context(run.cfg)),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as http:
        yield [Appliance(name, reg, run.cfg, http) for name, reg in run.products]


async def step_appliances(run: Run, fleet: list[Appliance]) -> None:
    cfg = run.cfg
    hq, branch, tmi = fleet
    t0 = time.time() - 600
    with stage("ingest: Test Connection"):
        for appliance in fleet:
            status, text = await appliance.test_connection(cfg.status_port)
            if status != 200:
                raise DemoError(f"Test Connection of {appliance.name}: {status} {text}")
            ok(f"{appliance.name}: Test Connection to the status server: {text}")
        status, text = await branch.test_connection(cfg.https_port, "not-the-password")
        ok(f"TDA-Branch with a mistyped password: {status} {text!r}")
    with stage("ingest: heartbeats to the status server"):
        for appliance, compliance in zip(fleet, (True, False, None), strict=True):
            answer = await appliance.heartbeat(compliance)
            extra = "" if compliance is None else f", security compliance {compliance}"
            ok(
                f"{appliance.name}: heartbeat accepted{extra}; next in "
                f"{answer['next_interval_seconds']} s, {len(answer['tasks'])} tasks"
            )
    with stage("ingest: SFTP upload (TDA-HQ)"):
        data = cef_file(HQ_DETECTIONS, t0)
        file_name = f"tda-hq-{run.tag}.cef"
        await hq.upload_sftp(file_name, data)
        run.accepted[hq.name] = len(HQ_DETECTIONS)
        ok(
            f"TDA-HQ: {file_name} ({len(data)} bytes, {len(HQ_DETECTIONS)} CEF records) "
            "uploaded over SFTP; the close returned, so every record is on the bus"
        )
    for appliance, data, what in (
        (branch, cef_file(BRANCH_DETECTIONS, t0, NOT_A_RECORD), "detections"),
        (tmi, cef_file(MITIGATION_RESULTS, t0), "mitigation results"),
    ):
        file_name = f"{appliance.name.lower()}-{run.tag}.cef"
        with stage(f"ingest: HTTPS upload ({appliance.name})"):
            answer = await appliance.upload_https(file_name, data)
        run.accepted[appliance.name] = int(answer["accepted"])
        run.rejected[appliance.name] = int(answer["rejected"])
        rejected = (
            f", {answer['rejected']} rejected (the line that is no log record goes to the "
            "rejected topic)"
            if answer["rejected"]
            else ""
        )
        ok(
            f"{appliance.name}: {file_name} over HTTPS: 202, {answer['accepted']} {what} "
            f"accepted{rejected}"
        )


def task_kind(kind: object) -> str:
    """A task kind as the status server's JSON carries it (number or name), in words."""
    try:
        name = status_pb2.MitigationTaskKind.Name(int(str(kind)))  # type: ignore[arg-type]
    except ValueError:
        name = str(kind)
    return name.removeprefix("MITIGATION_TASK_KIND_").lower().replace("_", " ")


CLEANUP_PATTERN = "emotet-cleanup-2026-12"


def cleanup_pattern_file() -> bytes:
    """The custom cleanup pattern the provider's expert writes for the threat the Threat
    Mitigator could not clean (what the demo's simulated mitigator would run)."""
    return (
        b"# TMSP custom cleanup pattern\n"
        b"threat: TROJ_EMOTET.SM\n"
        b"kill_process: svch0st.exe\n"
        b"delete_file: C:\\Users\\Public\\Libraries\\svch0st.exe\n"
        b"delete_registry_value: HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
        b"\\svch0st\n"
        b"quarantine_dir: C:\\ProgramData\\emotet\n"
    )


async def issue_task(
    c: Clients, operator: Signed, request: reporter_pb2.CreateMitigationTaskRequest, wait: float
) -> status_pb2.MitigationTask:
    """``CreateMitigationTask`` as the provider's operator, once the portal knows the
    product."""

    async def create() -> status_pb2.MitigationTask:
        answer = await c.portal.CreateMitigationTask(
            request, metadata=await operator.md(), timeout=30
        )
        task: status_pb2.MitigationTask = answer.task
        return task

    return await until_portal_knows(create, wait)


async def heartbeat_until_handed_out(tmi: Appliance, task_id: str, wait: float) -> dict[str, Any]:
    """Heartbeats of ``tmi`` until the status server hands ``task_id`` out; the task."""

    async def handed_out() -> dict[str, Any]:
        answer = await tmi.heartbeat()
        return {t["task_id"]: t for t in answer["tasks"]}

    tasks = await poll_until(
        handed_out,
        lambda tasks: task_id in tasks,
        label=f"{tmi.name} heartbeating until the status server hands the task out",
        waiting="not handed out yet",
        timeout_s=wait,
        failure=lambda _tasks: (
            f"ingest: the status server did not hand task {task_id} to {tmi.name} within "
            f"{wait:.0f}s (ingest consumes it from the mitigation-tasks topic)"
        ),
        interval_s=1,
    )
    task: dict[str, Any] = tasks[task_id]
    return task


async def step_respond(
    c: Clients, run: Run, fleet: list[Appliance], operator: Signed, admin: Signed
) -> None:
    """The provider's security expert deploys a custom cleanup pattern to the Threat
    Mitigator; it picks the task up with its next heartbeat, cleans the endpoint and
    reports it; the endpoint conforms again."""
    cfg = run.cfg
    tmi = fleet[2]
    product_id = tmi.reg.product.product_id
    content = cleanup_pattern_file()
    with stage("reporter: PutCleanupPattern"):

        async def put_pattern() -> reporter_pb2.PutCleanupPatternResponse:
            answer: reporter_pb2.PutCleanupPatternResponse = await c.portal.PutCleanupPattern(
                reporter_pb2.PutCleanupPatternRequest(
                    account_id=run.account_id,
                    name=CLEANUP_PATTERN,
                    description="Removes TROJ_EMOTET.SM droppers and their autorun keys",
                    content=content,
                ),
                metadata=await operator.md(),
                timeout=30,
            )
            return answer

        put = await until_portal_knows(put_pattern, cfg.timeout_s)
        ok(
            f"provider operator added custom cleanup pattern {CLEANUP_PATTERN!r} to the "
            f"account's catalogue ({put.pattern.size} bytes, version {put.pattern.version}, "
            f"sha256 {put.pattern.content_sha256[:12]}...)"
        )
    pattern = {
        "pattern_name": CLEANUP_PATTERN,
        "endpoint": FAILED_HOST,
        "threat_name": "TROJ_EMOTET.SM",
    }
    cleanup = status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN
    request = reporter_pb2.CreateMitigationTaskRequest(
        account_id=run.account_id, product_id=product_id, kind=cleanup, parameters=pattern
    )
    with stage("reporter: CreateMitigationTask as the customer's administrator"):
        try:
            await c.portal.CreateMitigationTask(request, metadata=await admin.md(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            ok(
                f"the customer's administrator may not issue tasks: {exc.code().name} "
                f"{exc.details()!r}"
            )
        else:
            raise DemoError("reporter: an account administrator could issue a mitigation task")
    with stage("reporter: CreateMitigationTask"):
        task_id = (await issue_task(c, operator, request, cfg.timeout_s)).task_id
        ok(
            f"provider operator deployed custom cleanup pattern {pattern['pattern_name']!r} "
            f"to TMI-HQ for {FAILED_HOST} ({task_id})"
        )
    with stage("ingest: TMI-HQ heartbeats until the task is handed out"):
        handed = await heartbeat_until_handed_out(tmi, task_id, cfg.timeout_s)
        ok(
            f"TMI-HQ got the task with its heartbeat: {task_kind(handed['kind'])}, "
            f"pattern {handed['parameters'].get('pattern_name')!r}"
        )
    with stage("ingest: TMI-HQ downloads the pattern from the log server"):
        expected = handed["parameters"].get("pattern_sha256", "")
        status, body = await poll_until(
            lambda: tmi.download_pattern(CLEANUP_PATTERN),
            lambda got: got[0] != 404,
            label="TMI-HQ downloading the pattern (the log server reads it from the bus)",
            waiting="not on the log server yet",
            timeout_s=cfg.timeout_s,
            failure=lambda got: (
                f"ingest: GET /v1/cleanup-patterns/{CLEANUP_PATTERN} still answers {got[0]} "
                f"after {cfg.timeout_s:.0f}s (ingest consumes the cleanup-patterns topic)"
            ),
        )
        if status != 200:
            raise DemoError(f"ingest: pattern download answered {status}: {body[:200]!r}")
        digest = hashlib.sha256(body).hexdigest()
        if digest != expected or body != content:
            raise DemoError(
                f"ingest: the downloaded pattern's sha256 {digest} is not the task's {expected}"
            )
        ok(
            f"TMI-HQ downloaded {CLEANUP_PATTERN!r} over HTTPS ({len(body)} bytes); its "
            "sha256 matches the one the task carries"
        )
    with stage("ingest: TMI-HQ reports the cleanup"):
        cleaned = [
            (
                TMI,
                "3003",
                "TROJ_EMOTET.SM",
                3,
                0,
                f"shost={FAILED_HOST} src=10.10.9.3 act=clean outcome=cleaned "
                f"cs1={pattern['pattern_name']} cs1Label=pattern",
            )
        ]
        file_name = f"tmi-hq-{run.tag}-cleanup.cef"
        result = await tmi.upload_https(file_name, cef_file(cleaned, time.time()))
        run.accepted[tmi.name] += int(result["accepted"])
        await tmi.heartbeat(acknowledged=[task_id])
        ok(
            f"TMI-HQ: cleaned TROJ_EMOTET.SM on {FAILED_HOST}, result uploaded ({file_name}); "
            "task acknowledged in the next heartbeat"
        )
    with stage("reporter: ListNonconformingEndpoints"):

        async def still_listed() -> list[incidents_pb2.NonconformingEndpoint]:
            await portal_view(c, run, admin)
            return [n for n in run.nonconforming.values() if n.endpoint.host == FAILED_HOST]

        await poll_until(
            still_listed,
            lambda still: all(n.cleared for n in still),
            label=f"waiting for {FAILED_HOST} to conform again in the portal",
            waiting="still nonconforming",
            timeout_s=cfg.timeout_s,
            failure=lambda _still: (
                f"after {cfg.timeout_s:.0f}s the portal still lists {FAILED_HOST} as "
                "nonconforming (see the correlator's and the reporter's logs)"
            ),
        )
        run.remediated.append(FAILED_HOST)
        ok(f"{FAILED_HOST} conforms again: the portal lists no nonconforming endpoint")


def forensic_bundle(host: str) -> bytes:
    """What a Threat Mitigator collects for a forensic data request: a gzipped tar of the
    endpoint's process list, autoruns and a memory sample (a few hundred KiB, so the log
    server cuts it into several chunks)."""
    members = {
        "processes.txt": f"{host}\nPID  NAME\n4    System\n3120 svch0st.exe\n".encode(),
        "autoruns.txt": b"HKCU\\...\\Run\\svch0st = C:\\Users\\Public\\svch0st.exe\n",
        "memory-svch0st.bin": secrets.token_bytes(600 * 1024),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def step_forensics(c: Clients, run: Run, fleet: list[Appliance], operator: Signed) -> None:
    """The provider's expert requests forensic data from the Threat Mitigator; it gets the
    task with a heartbeat, uploads what it collected over SFTP and acknowledges; the portal
    lists the file and the expert downloads it, byte for byte."""
    cfg = run.cfg
    tmi = fleet[2]
    request = reporter_pb2.CreateMitigationTaskRequest(
        account_id=run.account_id,
        product_id=tmi.reg.product.product_id,
        kind=status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
        parameters={"endpoint": FAILED_HOST, "collect": "processes,autoruns,memory"},
    )
    with stage("reporter: CreateMitigationTask (forensic data request)"):
        task_id = (await issue_task(c, operator, request, cfg.timeout_s)).task_id
        ok(f"provider operator requested forensic data of {FAILED_HOST} from TMI-HQ ({task_id})")
    with stage("ingest: TMI-HQ sends the forensic data over SFTP"):
        await heartbeat_until_handed_out(tmi, task_id, cfg.timeout_s)
        bundle = forensic_bundle(FAILED_HOST)
        file_name = f"{FAILED_HOST}-forensics.tar.gz"
        await tmi.upload_sftp(f"forensics/{task_id}/{file_name}", bundle)
        await tmi.heartbeat(acknowledged=[task_id])
        ok(
            f"TMI-HQ uploaded {file_name} ({len(bundle) // 1024} KiB) to "
            f"forensics/{task_id}/ over SFTP; task acknowledged"
        )
    with stage("reporter: ListForensicData"):

        async def listed() -> list[reporter_pb2.ForensicData]:
            answer = await c.portal.ListForensicData(
                reporter_pb2.ListForensicDataRequest(account_id=run.account_id, task_id=task_id),
                metadata=await operator.md(),
                timeout=30,
            )
            return [f for f in answer.files if f.complete]

        files = await poll_until(
            listed,
            bool,
            label="waiting for the portal to store the forensic data",
            waiting="not complete yet",
            timeout_s=cfg.timeout_s,
            failure=lambda _f: (
                f"after {cfg.timeout_s:.0f}s the portal lists no complete forensic data for "
                f"{task_id} (see the ingest gateway's and the reporter's logs)"
            ),
        )
    with stage("reporter: DownloadForensicData"):
        got = bytearray()
        async for piece in c.portal.DownloadForensicData(
            reporter_pb2.DownloadForensicDataRequest(
                account_id=run.account_id, upload_id=files[0].upload_id
            ),
            metadata=await operator.md(),
            timeout=60,
        ):
            got += piece.chunk
        if bytes(got) != bundle:
            raise DemoError(
                f"reporter: the downloaded forensic data ({len(got)} bytes) is not what TMI-HQ "
                f"sent ({len(bundle)} bytes)"
            )
        run.forensics.append(f"{file_name} ({len(bundle) // 1024} KiB) from TMI-HQ for {task_id}")
        ok(
            f"provider operator downloaded {file_name}: {len(got)} bytes, sha256 "
            f"{files[0].content_sha256[:12]}... matches what TMI-HQ sent"
        )


async def step_triage(c: Clients, run: Run, admin: Signed) -> None:
    """The administrator resolves the incident on the cleaned endpoint (a triage decision
    with a note); the correlator applies it and the portal shows the incident resolved."""
    cfg = run.cfg
    cleaned = [i for i in run.incidents.values() if FAILED_HOST in {e.host for e in i.endpoints}]
    target = max(cleaned or run.incidents.values(), key=lambda i: i.severity)
    resolved = incidents_pb2.INCIDENT_STATUS_RESOLVED
    note = f"{FAILED_HOST} cleaned by the custom cleanup pattern; conforms again"
    with stage("reporter: SetIncidentStatus"):
        await c.portal.SetIncidentStatus(
            reporter_pb2.SetIncidentStatusRequest(
                account_id=run.account_id,
                incident_id=target.incident_id,
                status=resolved,
                note=note,
            ),
            metadata=await admin.md(),
            timeout=30,
        )

        async def shown() -> incidents_pb2.Incident:
            got = await c.portal.GetIncident(
                reporter_pb2.GetIncidentRequest(
                    account_id=run.account_id, incident_id=target.incident_id
                ),
                metadata=await admin.md(),
                timeout=30,
            )
            incident: incidents_pb2.Incident = got.incident
            return incident

        incident = await poll_until(
            shown,
            lambda i: i.status == resolved,
            label=f"waiting for the portal to show {target.title!r} resolved",
            waiting="not applied yet",
            timeout_s=cfg.timeout_s,
            failure=lambda _i: (
                f"after {cfg.timeout_s:.0f}s the portal does not show {target.title!r} "
                "resolved (see the correlator's and the reporter's logs)"
            ),
        )
    run.incidents[target.incident_id] = incident
    ok(
        f"incident {target.title!r} resolved by the administrator (version "
        f"{incident.version}, note: {incident.status_note!r})"
    )


async def portal_view(c: Clients, run: Run, admin: Signed) -> None:
    """What the administrator sees in the portal now: incidents, nonconforming endpoints,
    products (with the correlator's liveness), into ``run``."""
    listed = await c.portal.ListIncidents(
        reporter_pb2.ListIncidentsRequest(account_id=run.account_id, page_size=100),
        metadata=await admin.md(),
        timeout=30,
    )
    for summary in listed.incidents:
        known = run.incidents.get(summary.incident_id)
        if known is None or (known.event_count, known.status) != (
            summary.event_count,
            summary.status,
        ):
            full = await c.portal.GetIncident(
                reporter_pb2.GetIncidentRequest(
                    account_id=run.account_id, incident_id=summary.incident_id
                ),
                metadata=await admin.md(),
                timeout=30,
            )
            run.incidents[summary.incident_id] = full.incident
    endpoints = await c.portal.ListNonconformingEndpoints(
        reporter_pb2.ListNonconformingEndpointsRequest(account_id=run.account_id),
        metadata=await admin.md(),
        timeout=30,
    )
    run.nonconforming = {e.endpoint_key: e for e in endpoints.endpoints}
    products = await c.portal.ListProducts(
        reporter_pb2.ListProductsRequest(account_id=run.account_id),
        metadata=await admin.md(),
        timeout=30,
    )
    run.portal_products = {p.product_id: p for p in products.products}


async def step_results(c: Clients, run: Run, admin: Signed) -> None:
    """Wait until the incidents, the nonconforming endpoint and the appliances' liveness are
    in the portal (reporter's read API, as the administrator) and the mails in the sink."""
    cfg = run.cfg
    rules = run.rules
    missing_rules = [r for r in EXPECTED_RULES if r not in rules.titles]
    if missing_rules:
        raise DemoError(f"the rule pack in {rules.directory} lacks {', '.join(missing_rules)}")
    expected_titles = {rules.titles[r]: r for r in EXPECTED_RULES}
    sink = MailSink(cfg.mail_dir)
    progress = Progress("waiting for the correlator, the portal and the notifier")
    deadline = time.monotonic() + cfg.timeout_s
    product_names = {reg.product.product_id: name for name, reg in run.products}
    online = incidents_pb2.PRODUCT_LIVENESS_STATE_ONLINE

    def missing() -> list[str]:
        """What has not arrived yet, each named."""
        titles = {i.title for i in run.incidents.values()}
        wanted = [f"incident {t!r}" for t in expected_titles if t not in titles]
        if not any(
            not n.cleared and n.endpoint.host == FAILED_HOST for n in run.nonconforming.values()
        ):
            wanted.append(f"nonconforming endpoint {FAILED_HOST}")
        for product_id, name in product_names.items():
            seen = run.portal_products.get(product_id)
            if seen is None or seen.liveness != online:
                wanted.append(f"{name} online in the portal")
        subjects = [m.subject for m in sink.all_to(run.admin_email)]
        for title in expected_titles:
            if not any(s.endswith(f"Incident: {title}") for s in subjects):
                wanted.append(f"mail about {title!r}")
        if not any(s.startswith("Nonconforming endpoint") for s in subjects):
            wanted.append(f"mail 'Nonconforming endpoint: {FAILED_HOST}'")
        return wanted

    while True:
        with stage("reporter: the portal's read API"):
            await portal_view(c, run, admin)
        wanted = missing()
        if not wanted:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            progress.done()
            raise DemoError(
                f"after {cfg.timeout_s:.0f}s still missing: {'; '.join(wanted)} "
                "(see the correlator's, the reporter's and the notifier's logs, .local/logs/ "
                "under make demo)"
            )
        progress.update(
            f"{len(run.incidents)} incidents, "
            f"{sum(1 for n in run.nonconforming.values() if not n.cleared)} nonconforming "
            f"endpoints, {len(sink.all_to(run.admin_email)) - len(run.mails)} new mails; "
            f"{left:.0f}s left"
        )
        await asyncio.sleep(0.5)
    progress.done()
    for product_id, name in product_names.items():
        seen = run.portal_products[product_id]
        compliance = (
            f", security compliance {'on' if seen.security_compliance_enabled else 'off'}"
            if seen.HasField("security_compliance_enabled")
            else ""
        )
        ok(f"{name} online in the portal (the correlator saw its heartbeat{compliance})")
    for inc in sorted(run.incidents.values(), key=lambda i: -i.severity):
        hosts = ", ".join(e.host for e in inc.endpoints)
        events = f"{inc.event_count} event{'s' if inc.event_count != 1 else ''}"
        ok(f"incident [{SEVERITY_NAME.get(inc.severity, '?')}] {inc.title} on {hosts} ({events})")
        for entry in inc.timeline[:4]:
            info(f"  {entry.at.ToDatetime():%H:%M:%S} UTC  {entry.summary}")
        if inc.recommended_actions:
            info(f"  recommended: {inc.recommended_actions[0]}")
    run.flagged = {k: n for k, n in run.nonconforming.items() if not n.cleared}
    for nce in run.flagged.values():
        if not nce.cleared:
            reason = incidents_pb2.NonconformingReason.Name(nce.reason)
            ok(
                f"nonconforming endpoint {nce.endpoint.host}: "
                f"{reason.removeprefix('NONCONFORMING_REASON_').lower().replace('_', ' ')} "
                f"({', '.join(nce.threat_names)})"
            )
    # a moment for mails of later updates (an escalation, say) before listing them
    await asyncio.sleep(1)
    run.mails = sink.all_to(run.admin_email)
    for mail in run.mails:
        if mail.path not in run.seen_mail:
            ok(f"mail to {run.admin_email}: {mail.subject!r}")


async def step_report(c: Clients, run: Run, admin: Signed) -> None:
    """The Customer Accounts row, then an on-demand report generated, downloaded and mailed
    to a report recipient."""
    cfg = run.cfg
    pb2 = reporter_pb2
    open_statuses = (incidents_pb2.INCIDENT_STATUS_NEW, incidents_pb2.INCIDENT_STATUS_INVESTIGATING)
    open_now = sum(i.status in open_statuses for i in run.incidents.values())
    with stage("reporter: ListCustomerAccounts"):

        async def account_row() -> reporter_pb2.CustomerAccount | None:
            rows = (
                await c.portal.ListCustomerAccounts(
                    pb2.ListCustomerAccountsRequest(account_id=run.account_id),
                    metadata=await admin.md(),
                    timeout=30,
                )
            ).accounts
            return rows[0] if rows else None

        def filled(row: reporter_pb2.CustomerAccount | None) -> bool:
            return row is not None and bool(row.last_received.seconds) and row.product_count >= 3

        def missing(row: reporter_pb2.CustomerAccount | None) -> str:
            return f"reporter: after {cfg.timeout_s:.0f}s the Customer Accounts screen has " + (
                "no row for the account"
                if row is None
                else "no upload or products"
                if not filled(row)
                else f"{row.open_incidents_live} open incidents, not {open_now}"
            )

        row = await poll_until(
            account_row,
            lambda row: filled(row) and row is not None and row.open_incidents_live == open_now,
            label="waiting for the Customer Accounts row",
            waiting="the read model is catching up",
            timeout_s=cfg.timeout_s,
            failure=missing,
        )
        assert row is not None  # noqa: S101 - filled() held
        compliance = pb2.SecurityCompliance.Name(row.security_compliance)
        ok("Customer Accounts row:")
        info(
            f"  Account {row.name} | Company {row.company_name} | Incidents "
            f"{row.incidents} (daily 02:00 count; {row.open_incidents_live} open now) | "
            f"Last Received {row.last_received.ToDatetime():%Y-%m-%d %H:%M} UTC"
        )
        info(
            f"  Services {', '.join(row.services)} | Managed By {row.managed_by} | "
            f"Valid From {row.valid_from.ToDatetime():%Y-%m-%d} | Security Compliance "
            f"{compliance.removeprefix('SECURITY_COMPLIANCE_').lower()} | "
            f"{row.product_count} products, {row.nonconforming_endpoints} nonconforming"
        )
    with stage("reporter: GetCustomerAccount of another tenant"):
        try:
            await c.portal.GetCustomerAccount(
                pb2.GetCustomerAccountRequest(account_id=run.provider_account_id),
                metadata=await admin.md(),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            ok(f"another tenant's account, asked for by this administrator: {exc.code().name}")
        else:
            raise DemoError("reporter: an administrator could read another tenant's account")
    with stage("reporter: AddReportRecipient"):
        recipient = f"ciso-{run.tag}@demo-corp.example.com"
        await c.portal.AddReportRecipient(
            pb2.AddReportRecipientRequest(account_id=run.account_id, email=recipient),
            metadata=await admin.md(),
            timeout=30,
        )
        ok(f"report recipient {recipient} added")
    with stage("reporter: GenerateReport"):
        now = datetime.now(UTC)
        request = pb2.GenerateReportRequest(
            account_id=run.account_id, kind=pb2.REPORT_KIND_ON_DEMAND, notify=True
        )
        request.period_start.CopyFrom(to_timestamp(now - timedelta(days=1)))
        request.period_end.CopyFrom(to_timestamp(now - timedelta(seconds=1)))
        answer = await c.portal.GenerateReport(request, metadata=await admin.md(), timeout=120)
        report = answer.report
        ok(f"on-demand report {report.title!r}: {report.pages} pages, {report.size_bytes} bytes")
    with stage("reporter: DownloadReport"):
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        stream = c.portal.DownloadReport(
            pb2.DownloadReportRequest(account_id=run.account_id, report_id=report.report_id),
            metadata=await admin.md(),
            timeout=120,
        )
        async for part in stream:
            chunks.append(part.chunk)
            digest.update(part.chunk)
        pdf = b"".join(chunks)
        if report.sha256 and digest.hexdigest() != report.sha256:
            raise DemoError("reporter: the downloaded PDF does not match its SHA-256")
        run.pdf = run.run_dir / (report.filename or f"{report.report_id}.pdf")
        run.pdf.write_bytes(pdf)
        ok(f"PDF downloaded to {run.pdf} ({len(pdf)} bytes, SHA-256 checked)")
    sink = MailSink(cfg.mail_dir)
    mail = await sink.wait_for(recipient, "Report ready", cfg.timeout_s, run.seen_mail)
    run.mails.append(mail)
    attached = f", attached: {', '.join(mail.attachments)}" if mail.attachments else ""
    ok(f"mail to {recipient}: {mail.subject!r} ({mail.path.name}{attached})")


def step_summary(run: Run) -> None:
    cfg = run.cfg
    assert run.account is not None  # noqa: S101
    print()
    print(_style("Summary", "1;36"))
    print(
        f"  account        {run.account.name} ({run.account_id}), company "
        f"{run.account.company_name}, managed by {run.account.managed_by_email}"
    )
    print(f"  administrator  {run.admin_email}: password + TOTP two-factor login")
    for name, reg in run.products:
        print(f"  product        {name}: {reg.product.product_id} ({reg.credentials.user_name})")
    total = sum(run.accepted.values())
    print(
        f"  events         {total} accepted, {sum(run.rejected.values())} rejected "
        f"({', '.join(f'{k}: {v}' for k, v in run.accepted.items())})"
    )
    for inc in sorted(run.incidents.values(), key=lambda i: -i.severity):
        rule = run.rules.names.get(inc.rule_ids[0], inc.rule_ids[0]) if inc.rule_ids else "?"
        print(
            f"  incident       [{SEVERITY_NAME.get(inc.severity, '?')}] {inc.title} "
            f"(rule {rule}, {', '.join(e.host for e in inc.endpoints)}) "
            f"{STATUS_NAME.get(inc.status, '?')}"
        )
    for nce in run.flagged.values():
        cleaned = (
            "; cleaned by the custom cleanup pattern, conforms again"
            if nce.endpoint.host in run.remediated
            else ""
        )
        print(f"  nonconforming  {nce.endpoint.host}: {', '.join(nce.threat_names)}{cleaned}")
    for line in run.forensics:
        print(f"  forensic data  {line}")
    for mail in run.mails:
        to = "" if mail.to == run.admin_email else f" (to {mail.to})"
        print(f"  mail           {mail.subject}{to}")
    if run.pdf is not None:
        print(f"  report         {run.pdf}")
    print(
        f"  on disk        mails: {cfg.mail_dir}/*.eml; this run: {run.run_dir}/ "
        "(TOTP QR code, administrator and product credentials, 0600)"
    )
    print()
    silent = cfg.offline_multiple * HEARTBEAT_S
    print(f"  The simulated appliances stop here: after {silent:.0f} s without a heartbeat the")
    print("  correlator marks them offline and the notifier mails 'Product offline' to the")
    print("  administrator; watch the mail directory.")
    print("  Look further: .local/logs/<service>.log, `scripts/stack.py status`; log in as the")
    print(f"  administrator with the TOTP secret in {run.run_dir / 'administrator.json'};")
    print("  `make down` stops the services and the local Kafka/FerretDB.")


async def demo(cfg: Config) -> Run:
    tag = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    run = Run(cfg, tag, RulePack.load(cfg.rules_dir))
    check_services(cfg)
    total = 6
    c = Clients(cfg)
    try:
        header(1, total, "Customer account, administrator and two-factor login (auth)")
        op_session, session = await step_account(c, run)
        operator, admin = Signed(c.auth, op_session), Signed(c.auth, session)
        run.provider_account_id = op_session.account_id
        header(2, total, "Register the appliances (ingest admin API)")
        await step_products(c, run, op_session)
        async with appliances(run) as fleet:
            header(3, total, "Simulated appliances: Test Connection, heartbeats, log uploads")
            await step_appliances(run, fleet)
            header(
                4, total, "Incidents in the portal and the mails (correlator, reporter, notifier)"
            )
            await step_results(c, run, admin)
            header(
                5,
                total,
                "Response: a custom cleanup pattern and a forensic data request through "
                "Threat Mitigator, triage",
            )
            await step_respond(c, run, fleet, operator, admin)
            await step_forensics(c, run, fleet, operator)
            await step_triage(c, run, admin)
        header(6, total, "Customer Accounts screen and an on-demand report (reporter)")
        await step_report(c, run, admin)
    finally:
        await c.close()
    step_summary(run)
    return run


def main() -> int:
    os.chdir(ROOT)  # relative settings (.local/tls, .local/auth) mean what they mean for the stack
    cfg = Config.from_env()
    print(_style("TMSP demo: simulated appliances -> incidents -> emails", "1"))
    try:
        asyncio.run(demo(cfg))
    except DemoError as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("TMSP_DEMO_DEBUG"):
            raise
        print(
            f"\ndemo: FAILED: unexpected {type(exc).__name__}: {exc} "
            "(TMSP_DEMO_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return 1
    print(_style("\ndemo: OK", "1;32"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``scripts/demo.py`` end to end: every service run as deployed, isolated on the shared
Kafka and FerretDB (own topic prefix, databases, consumer groups, free ports, TLS directory
and mail sink), the demo run as ``make demo`` runs it, and what it prints and produces
checked: incidents, the nonconforming endpoint, the mails in the sink, the files it writes.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tmsp_auth.testing import service_env
from tmsp_common.testing import REPO_ROOT, Infra, ServiceProcess, free_port
from tmsp_ingest.harness import Gateway
from tmsp_notifier.testing import notifier_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.grpc,
    pytest.mark.tls,
    pytest.mark.ssh,
    pytest.mark.slow,
]

DEMO = REPO_ROOT / "scripts" / "demo.py"

EXPECTED_INCIDENTS = {
    "[CRITICAL] Command-and-control callback followed by lateral movement",
    "[CRITICAL] Critical detection",
    "[CRITICAL] Threat detected and mitigation failed on the same endpoint",
    "[HIGH] Several high-severity detections on one endpoint",
    "[HIGH] Threat Mitigator could not clean a threat",
}


@dataclass
class Stack:
    env: dict[str, str]
    mail_dir: Path
    out_dir: Path
    procs: list[ServiceProcess]


@contextmanager
def running_stack(
    infra: Infra, names: Any, tmp_path: Path, *, without: frozenset[str] = frozenset()
) -> Iterator[Stack]:
    """Every service (but those in ``without``) as deployed, on its own names and ports."""
    prefix = names.prefix
    gateway = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        prefix,
        names.database("ingest"),
        tmp_path / "ingest",
    )
    tls_dir = gateway.tls_dir
    auth_env = service_env(infra.env(), prefix, names.database("auth"), tls_dir)
    auth_target = f"127.0.0.1:{auth_env['TMSP_AUTH_GRPC_PORT']}"
    # the gateway verifies the real auth's tokens, fetching its keys (not the harness's)
    gateway.extra_env.update(
        {"TMSP_INGEST_AUTH_PUBLIC_KEYS": "", "TMSP_INGEST_AUTH_GRPC_TARGET": auth_target}
    )
    smtp_port = free_port()
    mail_dir = tmp_path / "mail"
    notifier = notifier_env(
        infra_env=infra.env(),
        prefix=prefix,
        database=names.database("notifier"),
        smtp_port=smtp_port,
        grpc_port=free_port(),
        tls_dir=str(tls_dir),
        auth_target=auth_target,
    )
    notifier["TMSP_NOTIFIER_AUTH_PUBLIC_KEYS"] = ""
    app_id = names.group("demo-correlator")
    correlator = {
        **infra.env(),
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_CORRELATOR_APP_ID": app_id,
        "TMSP_CORRELATOR_MONGO_DATABASE": names.database("corr"),
        # nested and absent, as the default (<temp>/tmsp-correlator/<app id>) is on a
        # fresh machine: the worker creates it
        "TMSP_CORRELATOR_DATA_DIR": str(tmp_path / "tmsp-correlator" / app_id),
        "TMSP_CORRELATOR_PARTITIONS": "2",
        "TMSP_CORRELATOR_SESSION_TIMEOUT_S": "8",
        "TMSP_METRICS_PORT": "0",
    }
    reporter = {
        **infra.env(),
        "TMSP_TOPIC_PREFIX": prefix,
        "TMSP_TLS_DIR": str(tls_dir),
        "TMSP_REPORTER_MONGO_DATABASE": names.database("reporter"),
        "TMSP_REPORTER_CONSUMER_GROUP": names.group("reporter"),
        "TMSP_REPORTER_GRPC_PORT": str(free_port()),
        "TMSP_REPORTER_AUTH_TARGET": auth_target,
        "TMSP_METRICS_PORT": "0",
    }
    env = {**auth_env, **gateway.env(), **notifier, **correlator, **reporter}
    env.update(
        {
            "TMSP_DEMO_MAIL_DIR": str(mail_dir),
            "TMSP_DEMO_OUT_DIR": str(tmp_path / "demo"),
            "TMSP_DEMO_TIMEOUT_S": "150",
        }
    )
    procs: list[ServiceProcess] = []
    try:
        sink = ServiceProcess(
            "tmsp_notifier.devsink", env={}, args=["--port", str(smtp_port), "--dir", str(mail_dir)]
        ).start()
        procs.append(sink)
        sink.wait_for_log("listening", timeout=30)
        for module, module_env in (
            ("tmsp_auth", auth_env),
            ("tmsp_correlator", correlator),
            ("tmsp_notifier", notifier),
            ("tmsp_reporter", reporter),
        ):
            if module in without:
                continue
            proc = ServiceProcess(module, module_env).start()
            procs.append(proc)
            proc.wait_for_log("service ready", timeout=90)
        gateway.start(timeout=90)
        assert gateway.process is not None
        procs.append(gateway.process)
        yield Stack(env, mail_dir, tmp_path / "demo", procs)
    finally:
        for proc in reversed(procs):
            proc.terminate(timeout=30)


@pytest.fixture
def stack(infra: Infra, names: Any, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(infra, names, tmp_path) as s:
        yield s


def run_demo(env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(DEMO)],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def messages_to(mail_dir: Path, recipient: str) -> list[EmailMessage]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if recipient in str(msg["To"]):
            found.append(msg)
    return found


def mails_to(mail_dir: Path, recipient: str) -> list[str]:
    return [str(m["Subject"]) for m in messages_to(mail_dir, recipient)]


def summary_rows(stdout: str, label: str) -> list[str]:
    start = stdout.index("\nSummary\n")
    return [
        line[2 + 15 :] for line in stdout[start:].splitlines() if line.startswith(f"  {label:<15}")
    ]


def test_demo_shows_the_main_job_end_to_end_and_runs_again(stack: Stack) -> None:
    first = run_demo(stack.env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    assert out.rstrip().endswith("demo: OK")
    assert "Traceback" not in first.stderr

    # incidents: exactly the scenario's, each with severity and its rule
    incidents = summary_rows(out, "incident")
    assert {row.split(" (rule ")[0] for row in incidents} == EXPECTED_INCIDENTS
    assert any("(rule tmsp_c2_then_lateral, eng-ws-12)" in row for row in incidents)
    assert any("(rule tmsp_high_severity_burst, fin-ws-07)" in row for row in incidents)
    assert summary_rows(out, "nonconforming") == [
        "hr-lt-03: TROJ_EMOTET.SM; cleaned by the custom cleanup pattern, conforms again"
    ]
    (events,) = summary_rows(out, "events")
    assert events.startswith("9 accepted, 1 rejected")
    for name, compliance in (
        ("TDA-HQ", ", security compliance on"),
        ("TDA-Branch", ", security compliance off"),
        ("TMI-HQ", ""),
    ):
        assert f"{name} online in the portal (the correlator saw its heartbeat{compliance})" in out
    assert "2FA on, 10 recovery codes" in out
    assert "logged in with password + TOTP" in out
    # the result line, not a progress line shown while the trail was still being recorded
    trail = next(line for line in out.splitlines() if "security trail, as its admin" in line)
    assert "newest first: login succeeded" in trail and "two factor enabled" in trail
    assert "TDA-Branch with a mistyped password: 401 'bad credentials'" in out

    # the response: operators only; the task reaches the Threat Mitigator; the endpoint clears
    assert "administrator may not issue tasks: PERMISSION_DENIED 'provider operators only'" in out
    assert "TMI-HQ got the task with its heartbeat: custom cleanup pattern" in out
    assert "its sha256 matches the one the task carries" in out  # pattern from the log server
    (forensics,) = summary_rows(out, "forensic data")
    assert forensics.startswith("hr-lt-03-forensics.tar.gz (")
    assert " KiB) from TMI-HQ for task-" in forensics
    assert "matches what TMI-HQ sent" in out
    assert "hr-lt-03 conforms again" in out
    # triage: the administrator resolves an incident on the cleaned endpoint
    (resolved,) = [row for row in incidents if row.endswith(" resolved")]
    assert "hr-lt-03" in resolved
    assert sum(row.endswith(" new") for row in incidents) == len(incidents) - 1
    assert "resolved by the administrator (version " in out
    assert "note: 'hr-lt-03 cleaned by the custom cleanup pattern; conforms again'" in out

    # the mails really are in the sink, addressed to the account's administrator
    (admin_row,) = summary_rows(out, "administrator")
    admin = admin_row.split(":")[0]
    subjects = mails_to(stack.mail_dir, admin)
    assert subjects[:2] == ["Your invitation to TMSP", "Your TMSP confirmation code"]
    assert "Two-Factor Authentication enabled" in subjects
    assert "Nonconforming endpoint: hr-lt-03 (10.10.9.3)" in subjects
    incident_mails = {s for s in subjects if "Incident:" in s}
    assert {s.split("Incident: ")[1] for s in incident_mails} == {
        row.split("] ", 1)[1] for row in EXPECTED_INCIDENTS
    }
    mail_rows = summary_rows(out, "mail")
    assert sorted(r for r in mail_rows if "(to " not in r) == sorted(subjects)

    # the portal's read model and the report
    assert "Customer Accounts row:" in out
    assert "4 open now" in out  # the resolved one is not open
    assert "3 products, 0 nonconforming" in out
    assert "another tenant's account, asked for by this administrator: NOT_FOUND" in out
    (report_mail,) = [r for r in mail_rows if r.startswith("Report ready: ")]
    recipient = report_mail.rsplit("(to ", 1)[1].rstrip(")")
    (sent,) = messages_to(stack.mail_dir, recipient)
    assert str(sent["Subject"]).startswith("Report ready: On-demand report")
    (pdf_row,) = summary_rows(out, "report")
    pdf = Path(pdf_row).read_bytes()
    assert pdf.startswith(b"%PDF")
    (attachment,) = list(sent.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf  # the mailed PDF is the downloaded one

    # what it leaves on disk: the QR code, the credentials (owner-only)
    (run_dir,) = [p for p in stack.out_dir.iterdir() if p.is_dir()]
    assert (run_dir / "totp-qr.png").read_bytes().startswith(b"\x89PNG")
    creds = json.loads((run_dir / "products.json").read_text())
    assert sorted(creds) == ["TDA-Branch", "TDA-HQ", "TMI-HQ"]
    for path in (run_dir / "products.json", run_dir / "administrator.json"):
        assert path.stat().st_mode & 0o077 == 0

    # idempotent: a second run makes a new account, reuses the operator, and works
    second = run_demo(stack.env)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "(user exists)" in second.stdout
    (admin_row2,) = summary_rows(second.stdout, "administrator")
    assert admin_row2.split(":")[0] != admin
    incidents2 = summary_rows(second.stdout, "incident")
    assert {row.split(" (rule ")[0] for row in incidents2} == EXPECTED_INCIDENTS


def test_demo_without_the_stack_fails_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run_demo(
        {
            "TMSP_AUTH_GRPC_PORT": str(port),
            "TMSP_TLS_DIR": str(tmp_path / "tls"),
            "TMSP_DEMO_OUT_DIR": str(tmp_path / "demo"),
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"demo: FAILED: auth gRPC is not reachable on 127.0.0.1:{port}; start the stack "
        "first (scripts/stack.py up, or make demo)"
    ]


def test_demo_names_what_did_not_arrive_when_a_service_is_missing(
    infra: Infra, names: Any, tmp_path: Path
) -> None:
    with running_stack(infra, names, tmp_path, without=frozenset({"tmsp_notifier"})) as s:
        result = run_demo({**s.env, "TMSP_DEMO_TIMEOUT_S": "6"}, timeout=120)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch(
        r"demo: FAILED: no mail 'Your invitation to TMSP' or 'Reset your TMSP password' to "
        r"secops-[0-9a-f-]+@demo-corp\.example\.com arrived in \S+ within 6s \(is the "
        r"notifier running and the SMTP sink up\?\)",
        line,
    ), line
    assert "administrator secops-" in result.stdout  # it got that far

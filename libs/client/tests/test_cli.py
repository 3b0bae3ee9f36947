"""Argument parsing, settings and the exit codes that need no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tmsp.events.v1 import auth_pb2 as audit_pb2
from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp.reporter.v1 import reporter_pb2
from tmsp_client import config
from tmsp_client.arguments import paged
from tmsp_client.cli import build_parser, main
from tmsp_client.connection import Targets
from tmsp_client.context import Context
from tmsp_client.output import Output
from tmsp_client.session import Session, SessionStore


def test_filters_parse_to_protobuf_values() -> None:
    args = build_parser().parse_args(
        [
            "incidents",
            "--status",
            "new,investigating",
            "--min-severity",
            "HIGH",
            "--since",
            "2026-06-01",
            "--until",
            "2026-06-02T08:00:00+02:00",
            "--json",
        ]  # fmt: skip
    )
    assert args.status == [
        incidents_pb2.INCIDENT_STATUS_NEW,
        incidents_pb2.INCIDENT_STATUS_INVESTIGATING,
    ]
    assert args.min_severity == detections_pb2.SEVERITY_HIGH
    assert args.since == datetime(2026, 6, 1, tzinfo=UTC)
    assert args.until.astimezone(UTC) == datetime(2026, 6, 2, 6, tzinfo=UTC)
    assert args.json is True and args.limit == 100 and args.account == ""


def test_common_options_go_before_or_after_the_command() -> None:
    before = build_parser().parse_args(["--json", "--portal", "h:1", "accounts"])
    after = build_parser().parse_args(["accounts", "--portal", "h:1", "--json"])
    assert (before.json, before.portal) == (after.json, after.portal) == (True, "h:1")
    assert not hasattr(build_parser().parse_args(["accounts"]), "portal")


def test_repeatable_and_key_value_options() -> None:
    args = build_parser().parse_args(
        ["security-events", "--kind", "login-failed,locked-out", "--kind", "unlocked"]
    )
    assert args.kind == [
        audit_pb2.AUTH_AUDIT_KIND_LOGIN_FAILED,
        audit_pb2.AUTH_AUDIT_KIND_LOCKED_OUT,
        audit_pb2.AUTH_AUDIT_KIND_UNLOCKED,
    ]
    task = build_parser().parse_args(
        ["tasks", "create", "--product", "p1", "--kind", "forensic", "--param", "path=C:/x=y"]
    )
    assert task.param == [("path", "C:/x=y")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["incidents", "--status", "closed"], "'closed' is not one of"),
        (["incidents", "--since", "yesterday"], "not an ISO 8601 time"),
        (["tasks", "create", "--product", "p", "--kind", "forensic", "--param", "x"], "KEY=VALUE"),
        (["log-maintenance", "--log-days", "0"], "not a positive whole number"),
        (["reports", "generate", "--kind", "yearly"], "invalid choice"),
        (["incident"], "required"),
        (["account", "delete", "acme"], "--confirm"),
        (["users", "invite", "--email", "a@b.example", "--role", "operator"], "invalid choice"),
        (["products", "register", "--protocol", "ftp"], "'ftp' is not one of"),
        (["products", "update", "p1", "--upload-frequency", "-5"], "not a whole number"),
        (["notifications", "set", "--event", "confirmation-code", "--enabled"], "invalid choice"),
        (["notifications", "set", "--event", "incident", "--enabled", "--disabled"], "not allowed"),
        (["2fa"], "required"),
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_without_a_session_every_command_says_not_logged_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["accounts"]) == 2
    assert capsys.readouterr().err == "tmsp: not logged in: run `tmsp login`\n"
    assert main(["logout"]) == 0  # nothing to end


def test_usage_errors_found_after_parsing_exit_2_before_any_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["reports", "generate", "--kind", "on-demand"]) == 2
    assert "needs --since" in capsys.readouterr().err
    assert main(["tasks", "create", "--product", "p1", "--kind", "cleanup"]) == 2
    assert "needs --pattern NAME" in capsys.readouterr().err


def test_bad_settings_name_the_variable_or_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMSP_REPORTER_TARGET", "no-port")
    assert main(["accounts"]) == 2
    assert capsys.readouterr().err.startswith("tmsp: bad setting TMSP_REPORTER_TARGET: ")
    assert main(["accounts", "--portal", "127.0.0.1:50055", "--auth", "x y:1"]) == 2
    assert capsys.readouterr().err.startswith("tmsp: bad setting --auth: ")


def _saved(cfg: Path, tls_dir: str) -> Session:
    session = Session(
        email="a@acme.example",
        user_id="u1",
        account_id="acme",
        session_id="s1",
        access_token="at",
        refresh_token="rt",
        access_token_expires_at=datetime.now(UTC) + timedelta(minutes=5),
        targets=Targets(
            "auth.saved:1", "portal.saved:2", "ingest.saved:3", tls_dir, "notifier.saved:4"
        ),
    )
    SessionStore(cfg).save(session)
    return session


def test_targets_option_then_environment_then_session_then_default(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    session = _saved(clean_env, "saved-tls")
    monkeypatch.setenv("TMSP_REPORTER_TARGET", "portal.env:20")
    args = build_parser().parse_args(["accounts", "--auth", "auth.option:10"])
    settings = config.load({"TMSP_AUTH_TARGET": args.auth})
    ctx = Context(args, settings, Output(json=False))
    assert ctx.targets(session) == Targets(
        "auth.option:10", "portal.env:20", "ingest.saved:3", "saved-tls", "notifier.saved:4"
    )
    assert ctx.targets(None) == Targets(
        "auth.option:10", "portal.env:20", "127.0.0.1:50054", ".local/tls", "127.0.0.1:50056"
    )
    notifier = build_parser().parse_args(["notifications", "--notifier", "notifier.option:5"])
    chosen = Context(notifier, config.load({"TMSP_NOTIFIER_TARGET": notifier.notifier}), ctx.out)
    assert chosen.targets(session).notifier == "notifier.option:5"


def test_a_session_saved_before_the_notifier_target_existed_still_loads(
    clean_env: Path,
) -> None:
    session = _saved(clean_env, "saved-tls")
    path = clean_env / "session.json"
    data = json.loads(path.read_text())
    del data["targets"]["notifier"]
    path.write_text(json.dumps(data))
    loaded = SessionStore(clean_env).load()
    assert loaded is not None and loaded.targets.notifier == ""
    args = build_parser().parse_args(["notifications"])
    ctx = Context(args, config.load(), Output(json=False))
    assert ctx.targets(loaded).notifier == "127.0.0.1:50056"
    assert loaded.targets.auth == session.targets.auth


def test_no_ca_certificate_is_a_clear_setup_error(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _saved(clean_env, str(tmp_path / "no-tls"))
    assert main(["products"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tmsp: no CA certificate at {tmp_path / 'no-tls' / 'ca.pem'}: ")


def test_whoami_reads_the_session_without_calling(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _saved(clean_env, str(tmp_path))
    assert main(["whoami"]) == 0
    out = capsys.readouterr().out
    assert "a@acme.example" in out and "portal.saved:2" in out
    assert "rt" not in out.split() and "at" not in out.split()


def test_lists_follow_page_tokens_up_to_the_limit() -> None:
    pages = {"": (["r1", "r2", "r3"], "p2"), "p2": (["r4", "r5", "r6"], "p3"), "p3": (["r7"], "")}
    asked: list[tuple[str, int]] = []

    def list_reports(request: reporter_pb2.ListReportsRequest) -> reporter_pb2.ListReportsResponse:
        asked.append((request.page_token, request.page_size))
        ids, token = pages[request.page_token]
        reports = [reporter_pb2.Report(report_id=i) for i in ids]
        return reporter_pb2.ListReportsResponse(reports=reports, next_page_token=token)

    request = reporter_pb2.ListReportsRequest(account_id="acme")
    every = paged(list_reports, request, "reports", 100, page_max=3)
    assert [r.report_id for r in every.reports] == [f"r{n}" for n in range(1, 8)]
    assert every.next_page_token == ""
    asked.clear()
    some = paged(list_reports, reporter_pb2.ListReportsRequest(), "reports", 5, page_max=3)
    assert [r.report_id for r in some.reports] == ["r1", "r2", "r3", "r4", "r5"]
    assert asked == [("", 3), ("p2", 2)]

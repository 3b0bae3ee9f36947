"""The commands that change things, against fake stubs: which requests they build (update
masks, settings read then replaced whole, a registration's request id), the two-factor
dialogue, and where issued credentials go (stdout once, or a 0600 file)."""

from __future__ import annotations

import io
import json
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from tmsp.auth.v1 import auth_pb2
from tmsp.events.v1 import detections_pb2, notifications_pb2, products_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp.notifier.v1 import notifier_pb2
from tmsp.reporter.v1 import reporter_pb2
from tmsp_client import config
from tmsp_client.arguments import with_default_verb
from tmsp_client.cli import build_parser, main
from tmsp_client.commands import accounts, products, reports
from tmsp_client.context import Context, UsageError
from tmsp_client.output import Output
from tmsp_client.transfer import DownloadError, PrivateFile


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(products.time, "sleep", lambda _s: None)  # between retries


class Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a stub raises when the server answers ``code``."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any: ...
    def trailing_metadata(self) -> Any: ...
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class Stub:
    """Any RPC: records the request, answers the next of its answers (or raises it)."""

    def __init__(self, **answers: Any) -> None:
        self.answers = {k: v if isinstance(v, list) else [v] for k, v in answers.items()}
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, rpc: str) -> Callable[[Any], Any]:
        def call(request: Any) -> Any:
            self.calls.append((rpc, request))
            answer = self.answers[rpc].pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return call

    def rpcs(self) -> list[str]:
        return [name for name, _ in self.calls]


def run(argv: list[str], **stubs: Stub) -> tuple[Context, io.StringIO, io.StringIO]:
    """Run a command as signed in to account ``acme`` as ``me@acme.example``."""
    args = build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    signed: Any = SimpleNamespace(
        session=SimpleNamespace(email="me@acme.example", account_id="acme")
    )
    conn: Any = SimpleNamespace(close=lambda: None, **stubs)
    ctx = Context(
        args,
        config.load(),
        Output(getattr(args, "json", False), out, err),
        _conn=conn,
        _signed=signed,
    )
    args.run(ctx)
    return ctx, out, err


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], ["show"]),
        (["acme"], ["show", "acme"]),
        (["--json", "acme"], ["show", "--json", "acme"]),
        (["--portal", "show", "acme"], ["show", "--portal", "show", "acme"]),  # a value
        (["edit", "--company", "C"], ["edit", "--company", "C"]),
        (["-h"], ["-h"]),  # the group's help
        (["acme", "-h"], ["show", "acme", "-h"]),
    ],
)
def test_a_group_without_a_verb_means_its_default(words: list[str], expected: list[str]) -> None:
    assert with_default_verb(words, "show", {"show", "create", "edit", "delete"}) == expected


def test_the_forms_from_before_the_verbs_still_parse() -> None:
    parse = build_parser().parse_args
    assert parse(["account", "acme", "--json"]).account_id == "acme"
    assert parse(["--json", "account"]).run is parse(["account", "show"]).run
    assert parse(["users", "--account", "acme"]).account == "acme"
    listing = parse(["products", "--registry"])
    assert listing.registry and listing.run is products.products_list
    assert parse(["reports", "schedule", "--account", "a"]).run is reports.schedule_show
    assert parse(["reports", "schedule", "set", "--no-daily"]).daily is False


def test_account_edit_masks_exactly_the_options_given() -> None:
    args = build_parser().parse_args(
        [
            "account",
            "edit",
            "--company",
            "Acme GmbH",
            "--time-zone",
            "Europe/Berlin",
            "--services",
            "tda, tmi,",
            "--valid-until",
            "2027-01-01",
        ]  # fmt: skip
    )
    request = accounts.update_request("acme", args)
    assert list(request.update_mask) == ["company_name", "services", "valid_until", "time_zone"]
    a = request.account
    assert (a.account_id, a.company_name, a.time_zone) == ("acme", "Acme GmbH", "Europe/Berlin")
    assert list(a.services) == ["tda", "tmi"]
    assert a.valid_until.ToDatetime(tzinfo=UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    assert not a.HasField("valid_from") and a.name == ""
    cleared = build_parser().parse_args(["account", "edit", "x", "--managed-by", ""])
    assert list(accounts.update_request("x", cleared).update_mask) == ["managed_by_user_id"]
    with pytest.raises(UsageError, match="nothing to change"):
        accounts.update_request("acme", build_parser().parse_args(["account", "edit"]))


def test_nothing_to_change_is_a_usage_error_before_any_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (
        ["reports", "schedule", "set"],
        ["notifications", "set", "--event", "incident"],
        ["products", "update", "p1", "--expected-version", "3"],
        ["account", "edit", "acme"],
    ):
        assert main(argv) == 2, argv
        assert "nothing to change" in capsys.readouterr().err


# -- requests ---------------------------------------------------------------------------


def test_schedule_set_keeps_what_it_is_not_told_to_change() -> None:
    current = reporter_pb2.ReportSchedule(
        account_id="acme", daily_administrative=True, weekly_executive=True, time_zone="UTC"
    )
    stub = Stub(
        GetReportSchedule=reporter_pb2.GetReportScheduleResponse(schedule=current),
        SetReportSchedule=reporter_pb2.SetReportScheduleResponse(schedule=current),
    )
    run(["reports", "schedule", "set", "--no-daily", "--monthly", "--time-zone", ""], portal=stub)
    assert stub.rpcs() == ["GetReportSchedule", "SetReportSchedule"]
    sent = stub.calls[1][1].schedule
    assert (sent.daily_administrative, sent.weekly_executive, sent.monthly_executive) == (
        False,
        True,
        True,
    )
    assert sent.time_zone == "" and sent.account_id == "acme"


def test_notifications_set_replaces_the_settings_read_at_their_version() -> None:
    current = notifier_pb2.NotificationSettings(
        account_id="acme",
        kind=notifications_pb2.NOTIFICATION_KIND_PRODUCT_OFFLINE,
        enabled=True,
        min_severity=detections_pb2.SEVERITY_MEDIUM,
        notify_administrator=True,
        extra_recipients=["old@acme.example"],
        max_per_hour=12,
        digest=True,
        version=4,
    )
    stub = Stub(
        GetNotificationSettings=notifier_pb2.GetNotificationSettingsResponse(settings=current),
        UpdateNotificationSettings=notifier_pb2.UpdateNotificationSettingsResponse(
            settings=current
        ),
    )
    _, out, _ = run(
        [
            "notifications",
            "set",
            "--event",
            "product-offline",
            "--disabled",
            "--recipients",
            "soc@acme.example,cto@acme.example",
            "--no-digest",
        ],  # fmt: skip
        notifier=stub,
    )
    get, update = (request for _, request in stub.calls)
    assert (get.account_id, get.kind) == (
        "acme",
        notifications_pb2.NOTIFICATION_KIND_PRODUCT_OFFLINE,
    )
    sent = update.settings
    assert (sent.enabled, sent.digest, sent.notify_administrator, sent.max_per_hour) == (
        False,
        False,
        True,
        12,
    )
    assert list(sent.extra_recipients) == ["soc@acme.example", "cto@acme.example"]
    assert update.HasField("expected_version") and update.expected_version == 4
    assert out.getvalue().splitlines()[0].startswith("EVENT")
    cleared = Stub(
        GetNotificationSettings=notifier_pb2.GetNotificationSettingsResponse(settings=current),
        UpdateNotificationSettings=notifier_pb2.UpdateNotificationSettingsResponse(),
    )
    run(["notifications", "set", "--event", "product-offline", "--recipients", "",
         "--expected-version", "9", "--account", "other"], notifier=cleared)  # fmt: skip
    assert cleared.calls[0][1].account_id == "other"
    assert list(cleared.calls[1][1].settings.extra_recipients) == []
    assert cleared.calls[1][1].expected_version == 9


def test_deliveries_and_settings_name_the_account_the_notifier_needs() -> None:
    stub = Stub(
        ListNotificationSettings=notifier_pb2.ListNotificationSettingsResponse(),
        ListDeliveries=notifier_pb2.ListDeliveriesResponse(),
    )
    run(["notifications"], notifier=stub)
    _, out, _ = run(["notifications", "deliveries", "--limit", "5"], notifier=stub)
    assert [r.account_id for _, r in stub.calls] == ["acme", "acme"]
    assert stub.calls[1][1].page_size == 5
    assert out.getvalue().strip() == "(nothing sent yet)"


def test_products_update_sets_only_the_fields_given() -> None:
    args = build_parser().parse_args(
        [
            "products",
            "update",
            "p1",
            "--upload-bandwidth",
            "0",
            "--name",
            "TDA-HQ",
            "--expected-version",
            "7",
        ]  # fmt: skip
    )
    request = products.update_request(args)
    assert request.HasField("upload_bandwidth_bytes_per_second")
    assert request.upload_bandwidth_bytes_per_second == 0  # 0 is a value: unlimited
    assert request.name == "TDA-HQ" and request.expected_version == 7
    for unset in ("upload_frequency_seconds", "heartbeat_interval_seconds"):
        assert not request.HasField(unset)


CREDENTIALS = ingest_pb2.ServerCredentials(
    user_name="prod-p1",
    password="s3cret-password-24-chars",
    client_certificate_pem=b"-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n",
    client_private_key_pem=b"-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
    ca_certificate_pem=b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
)
PRODUCT = products_pb2.ProductSnapshot(product_id="p1", name="TDA-HQ", version=1)
REGISTER = ["products", "register", "--kind", "tda", "--name", "TDA-HQ", "--protocol", "SSL",
            "--email", "owner@acme.example", "--heartbeat-interval", "60"]  # fmt: skip


def test_register_retries_with_the_same_request_id_and_prints_the_credentials_once() -> None:
    answer = ingest_pb2.RegisterProductResponse(product=PRODUCT, credentials=CREDENTIALS)
    stub = Stub(RegisterProduct=[Failed(grpc.StatusCode.UNAVAILABLE), answer])
    _, out, err = run(REGISTER, ingest=stub)
    first, retry = (request for _, request in stub.calls)
    assert first.request_id and first == retry
    assert (first.account_id, first.kind, first.protocol) == (
        "acme",
        products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
        products_pb2.UPLOAD_PROTOCOL_SSL,
    )
    assert (first.upload_frequency_seconds, first.heartbeat_interval_seconds) == (300, 60)
    text = out.getvalue()
    assert text.count(CREDENTIALS.password) == 1 and "KEY" in text and "CA" in text
    assert "shown only once" in err.getvalue() and CREDENTIALS.password not in err.getvalue()
    again = Stub(RegisterProduct=answer)
    run([*REGISTER, "--request-id", "reg-1"], ingest=again)
    assert again.calls[0][1].request_id == "reg-1"


def test_register_gives_up_naming_the_request_id_to_retry_with() -> None:
    down = Failed(grpc.StatusCode.UNAVAILABLE, "connection refused")
    stub = Stub(RegisterProduct=[down, down, down])
    with pytest.raises(grpc.RpcError):
        run(REGISTER, ingest=stub)
    assert len({r.request_id for _, r in stub.calls}) == 1 and len(stub.calls) == 3


def test_credentials_go_only_to_the_0600_file_when_one_is_named(tmp_path: Path) -> None:
    target = tmp_path / "tda-hq.json"
    target.write_text("old credentials")
    target.chmod(0o644)
    answer = ingest_pb2.RotateProductCredentialsResponse(product=PRODUCT, credentials=CREDENTIALS)
    stub = Stub(RotateProductCredentials=answer)
    _, out, err = run(
        ["products", "rotate", "p1", "--credentials-file", str(target), "--json"], ingest=stub
    )
    assert not stub.calls[0][1].HasField("ssh_public_key")  # the accepted key stays
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    saved = json.loads(target.read_text())
    assert saved["password"] == CREDENTIALS.password and saved["product_id"] == "p1"
    assert saved["client_private_key_pem"] == CREDENTIALS.client_private_key_pem.decode()
    shown = out.getvalue() + err.getvalue()
    assert CREDENTIALS.password not in shown and "KEY" not in shown
    assert json.loads(out.getvalue())["product"]["product_id"] == "p1"
    assert [p.name for p in tmp_path.iterdir()] == ["tda-hq.json"]


def test_a_credentials_file_that_cannot_be_written_fails_before_the_call(tmp_path: Path) -> None:
    stub = Stub()
    with pytest.raises(DownloadError, match="cannot write"):
        run([*REGISTER, "--credentials-file", str(tmp_path / "missing" / "c.json")], ingest=stub)
    assert stub.calls == []


def test_a_private_file_left_unwritten_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), PrivateFile(str(tmp_path / "c.json")):
        raise RuntimeError("the call failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="is a directory"):
        PrivateFile(str(tmp_path))


def test_account_create_and_users_invite_build_their_requests() -> None:
    stub = Stub(
        CreateAccount=auth_pb2.CreateAccountResponse(
            account=auth_pb2.Account(account_id="new", name="Globex")
        ),
        CreateUser=auth_pb2.CreateUserResponse(user=auth_pb2.User(email="a@globex.example")),
    )
    _, out, _ = run(
        [
            "account",
            "create",
            "--name",
            "Globex",
            "--company",
            "Globex Inc",
            "--services",
            "tda",
            "--valid-from",
            "2026-01-01",
        ],  # fmt: skip
        accounts=stub,
    )
    created = stub.calls[0][1].account
    assert (created.name, created.company_name, list(created.services)) == (
        "Globex",
        "Globex Inc",
        ["tda"],
    )
    assert created.HasField("valid_from") and not created.HasField("valid_until")
    assert created.time_zone == ""  # the server's default
    assert "users invite --account new" in out.getvalue()
    run(["users", "invite", "--email", "a@globex.example", "--role", "analyst", "--account", "new"],
        accounts=stub)  # fmt: skip
    invite = stub.calls[1][1]
    assert (invite.account_id, list(invite.roles)) == ("new", [auth_pb2.ROLE_ANALYST])


# -- two-factor authentication ----------------------------------------------------------


def test_2fa_setup_walks_the_dialogue_and_shows_the_codes_only_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("CONF-123\n654321\n"))
    stub = Stub(
        SendConfirmationEmail=auth_pb2.SendConfirmationEmailResponse(),
        ConfirmSetupCode=auth_pb2.ConfirmSetupCodeResponse(
            otpauth_uri="otpauth://totp/TMSP:me?secret=ABCDEF&issuer=TMSP",
            secret_base32="ABCDEF",
            qr_png=b"\x89PNG...",
            qr_svg="<svg/>",
        ),
        EnableTwoFactor=auth_pb2.EnableTwoFactorResponse(recovery_codes=["rc-1", "rc-2"]),
    )
    qr = tmp_path / "qr.png"
    _, out, err = run(["2fa", "setup", "--code-stdin", "--qr", str(qr)], auth=stub)
    assert stub.rpcs() == ["SendConfirmationEmail", "ConfirmSetupCode", "EnableTwoFactor"]
    assert stub.calls[1][1].confirmation_code == "CONF-123"
    assert stub.calls[2][1].totp_code == "654321"
    assert qr.read_bytes() == b"\x89PNG..." and stat.S_IMODE(qr.stat().st_mode) == 0o600
    text = out.getvalue()
    assert "otpauth://totp/TMSP:me?secret=ABCDEF" in text
    assert text.rstrip().endswith("rc-1\nrc-2")
    notes = err.getvalue()
    assert "me@acme.example" in notes and "shown only now" in notes
    for secret in ("ABCDEF", "rc-1", "CONF-123", "654321"):
        assert secret not in notes


def test_2fa_change_device_walks_the_same_dialogue_and_ends_in_change_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("CONF-9\n112233\n"))
    stub = Stub(
        SendConfirmationEmail=auth_pb2.SendConfirmationEmailResponse(),
        ConfirmSetupCode=auth_pb2.ConfirmSetupCodeResponse(
            otpauth_uri="otpauth://totp/TMSP:me?secret=NEWSEC", secret_base32="NEWSEC"
        ),
        ChangeDevice=auth_pb2.ChangeDeviceResponse(),
    )
    _, out, err = run(["2fa", "change-device", "--code-stdin"], auth=stub)
    assert stub.rpcs() == ["SendConfirmationEmail", "ConfirmSetupCode", "ChangeDevice"]
    assert stub.calls[1][1].confirmation_code == "CONF-9"
    assert stub.calls[2][1].totp_code == "112233"
    text = out.getvalue()
    assert "secret:      NEWSEC" in text
    assert text.rstrip().endswith("moved to the new device")
    for secret in ("NEWSEC", "CONF-9", "112233"):
        assert secret not in err.getvalue()


def test_2fa_setup_with_json_prints_one_line_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("CONF-123\n654321\n"))
    stub = Stub(
        SendConfirmationEmail=auth_pb2.SendConfirmationEmailResponse(),
        ConfirmSetupCode=auth_pb2.ConfirmSetupCodeResponse(
            otpauth_uri="otpauth://x", secret_base32="ABC", qr_png=b"png"
        ),
        EnableTwoFactor=auth_pb2.EnableTwoFactorResponse(recovery_codes=["rc-1"]),
    )
    _, out, _ = run(["2fa", "setup", "--code-stdin", "--json"], auth=stub)
    provisioning, codes = (json.loads(line) for line in out.getvalue().splitlines())
    assert provisioning["otpauth_uri"] == "otpauth://x" and provisioning["qr_png"] == ""
    assert codes == {"recovery_codes": ["rc-1"]}


def test_2fa_setup_without_the_emailed_code_stops_before_confirming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    stub = Stub(SendConfirmationEmail=auth_pb2.SendConfirmationEmailResponse())
    with pytest.raises(UsageError, match="no code on stdin"):
        run(["2fa", "setup", "--code-stdin"], auth=stub)
    assert stub.rpcs() == ["SendConfirmationEmail"]


def test_2fa_disable_and_new_recovery_codes_reauthenticate_by_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub = Stub(
        DisableTwoFactor=auth_pb2.DisableTwoFactorResponse(),
        RegenerateRecoveryCodes=auth_pb2.RegenerateRecoveryCodesResponse(recovery_codes=["n-1"]),
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("my-password\n"))
    _, out, _ = run(["2fa", "recovery-codes", "--password-stdin"], auth=stub)
    assert out.getvalue() == "n-1\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("my-password\n"))
    _, out, _ = run(["2fa", "disable", "--password-stdin"], auth=stub)
    assert "off for me@acme.example" in out.getvalue()
    assert [r.current_password for _, r in stub.calls] == ["my-password", "my-password"]


def test_a_reset_link_gives_its_token_and_a_bare_token_is_itself() -> None:
    from tmsp_client.commands.password import token_of

    link = "https://portal.tmsp.local/reset-password?token=Ab-c_9"
    assert token_of(link) == "Ab-c_9"
    assert token_of("  Ab-c_9\n") == "Ab-c_9"
    for bad in ("", "https://portal.tmsp.local/reset-password", "https://x/?token="):
        with pytest.raises(UsageError):
            token_of(bad)

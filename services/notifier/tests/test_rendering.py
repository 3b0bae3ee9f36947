from __future__ import annotations

import pytest

from tmsp_common.errors import InvalidArgument
from tmsp_notifier.domain.model import Kind
from tmsp_notifier.service_layer.rendering import ALLOWED_PARAMS, SECRET_PARAMS, Renderer

R = Renderer("https://portal.example")
CODE = "493817"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_renders_subject_text_and_html(kind: Kind) -> None:
    params = {"code": CODE, "reset_url": "https://p/reset?t=SECRET"}
    email = R.render(kind, params, account_name="Acme", items=["one", "two"])
    assert email.subject and "\n" not in email.subject
    assert email.text.strip() and email.html.lstrip().startswith("<!DOCTYPE html>")
    assert CODE not in email.subject and "SECRET" not in email.subject
    if kind in (Kind.CONFIRMATION_CODE, Kind.EMERGENCY_CODE):
        assert CODE in email.text and CODE in email.html
    else:
        assert CODE not in email.text and CODE not in email.html
    if kind != Kind.PASSWORD_RESET:
        assert "SECRET" not in email.text and "SECRET" not in email.html


def test_only_code_kinds_may_see_the_code() -> None:
    for kind, allowed in ALLOWED_PARAMS.items():
        if "code" in allowed:
            assert kind in (Kind.CONFIRMATION_CODE, Kind.EMERGENCY_CODE)
    assert {"code", "reset_url"} <= SECRET_PARAMS


def test_html_is_autoescaped_text_is_not() -> None:
    email = R.render(
        Kind.INCIDENT,
        {"title": "<script>alert(1)</script>", "severity": "High", "incident_id": "i1"},
        account_name="A & B",
    )
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "A &amp; B" in email.html
    assert "<script>alert(1)</script>" in email.text


def test_missing_code_is_an_invalid_request() -> None:
    with pytest.raises(InvalidArgument, match="code"):
        R.render(Kind.CONFIRMATION_CODE, {})


def test_crlf_in_a_subject_parameter_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        R.render(Kind.INCIDENT, {"title": "x\r\nBcc: evil@example.com", "severity": "High"})
    assert err.value.field == "subject"


def test_localtime_filter_uses_the_time_zone() -> None:
    email = R.render(
        Kind.TWO_FACTOR_ENABLED,
        {"changed_at": "2026-01-15T12:00:00+00:00"},
        time_zone="Europe/Berlin",
    )
    assert "2026-01-15 13:00 CET" in email.text


# Exactly what auth sends (tmsp_auth.service_layer.auth): every value must reach the mail.
AT = "2026-01-15T12:00:00+00:00"
AUTH_REQUESTS: list[tuple[Kind, dict[str, str], list[str]]] = [
    (
        Kind.CONFIRMATION_CODE,
        {"user_name": "Ada", "code": CODE, "expires_minutes": "10"},
        ["Ada", CODE, "10 minutes"],
    ),
    (
        Kind.EMERGENCY_CODE,
        {"user_name": "Ada", "code": CODE, "expires_minutes": "15"},
        ["Ada", CODE, "15 minutes"],
    ),
    (
        Kind.PASSWORD_RESET,
        {
            "user_name": "Ada",
            "reset_url": "https://p/reset/tok123",
            "expires_minutes": "60",
            "invite": "false",
        },
        ["Ada", "https://p/reset/tok123", "60 minutes", "choose a new password"],
    ),
    (
        Kind.ACCOUNT_LOCKED,
        {"user_name": "Ada", "locked_until": AT, "locked_minutes": "15"},
        ["Ada", "15 minutes", "2026-01-15 13:00 CET"],
    ),
    (Kind.TWO_FACTOR_ENABLED, {"user_name": "Ada", "changed_at": AT}, ["Ada", "13:00 CET"]),
    (Kind.TWO_FACTOR_DISABLED, {"user_name": "Ada", "changed_at": AT}, ["disabled", "13:00 CET"]),
    (
        Kind.TWO_FACTOR_DEVICE_CHANGED,
        {"user_name": "Ada", "changed_at": AT},
        ["device", "13:00 CET"],
    ),
    (
        Kind.EMERGENCY_CODE_USED,
        {"user_name": "Ada", "used_at": AT, "source_ip": "203.0.113.9", "recovery_codes_left": "0"},
        ["emergency access code", "13:00 CET", "203.0.113.9"],
    ),
    (
        Kind.RECOVERY_CODE_USED,
        {"user_name": "Ada", "used_at": AT, "source_ip": "203.0.113.9", "recovery_codes_left": "7"},
        ["recovery code", "13:00 CET", "203.0.113.9", "Recovery codes left: 7"],
    ),
]


@pytest.mark.parametrize(("kind", "params", "shown"), AUTH_REQUESTS, ids=lambda v: str(v)[:30])
def test_auth_parameters_reach_text_and_html(
    kind: Kind, params: dict[str, str], shown: list[str]
) -> None:
    email = R.render(kind, params, time_zone="Europe/Berlin")
    for value in shown:
        assert value in email.text, (kind, value)
        assert value in email.html, (kind, value)
    assert CODE not in email.subject and "tok123" not in email.subject


def test_invitation_reads_as_an_invitation() -> None:
    params = {"reset_url": "https://p/r/t", "expires_minutes": "1440", "invite": "true"}
    email = R.render(Kind.PASSWORD_RESET, params)
    assert email.subject == "Your invitation to TMSP"
    assert "invited" in email.text and "invited" in email.html
    assert R.render(Kind.PASSWORD_RESET, {"reset_url": "https://p/r/t"}).subject == (
        "Reset your TMSP password"
    )


def test_an_invitation_to_an_address_in_use_says_why_and_has_no_link() -> None:
    """Auth holds a user whose address signs in to another account: its account sees an
    invitation like any other (same subject in the deliveries), the invitee learns why."""
    held = R.render(
        Kind.PASSWORD_RESET, {"invite": "in_use", "user_name": "Bob"}, account_name="Acme"
    )
    invited = R.render(Kind.PASSWORD_RESET, {"invite": "true", "reset_url": "https://p/r/t"})
    assert held.subject == invited.subject
    for body in (held.text, held.html):
        assert "Bob" in body and "Acme" in body
        assert "already signs in to another TMSP account" in body
        assert "choose your password" not in body and "https://p/r/" not in body
    with pytest.raises(InvalidArgument, match="reset_url"):  # only in_use goes without a link
        R.render(Kind.PASSWORD_RESET, {"invite": "true"})


def test_report_ready_links_or_attaches_and_never_puts_the_link_in_the_subject() -> None:
    params = {"report_name": "Weekly", "period": "2026-W03", "download_url": "https://p/d?t=S3"}
    email = R.render(Kind.REPORT_READY, params)
    assert email.subject == "Report ready: Weekly"
    assert "https://p/d?t=S3" in email.text and "https://p/d?t=S3" in email.html
    assert "attached" not in email.text
    attached = R.render(Kind.REPORT_READY, {"report_name": "Weekly", "attached": "yes"})
    assert "attached to this message" in attached.text
    assert "attached to this message" in attached.html

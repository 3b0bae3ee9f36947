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
        Kind.TWO_FACTOR_ENABLED, {"at": "2026-01-15T12:00:00+00:00"}, time_zone="Europe/Berlin"
    )
    assert "2026-01-15 13:00 CET" in email.text

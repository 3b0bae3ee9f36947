from __future__ import annotations

import json

import pytest
import structlog

from tmsp_common.logging import bind_context, clear_context, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield
    structlog.reset_defaults()


def test_json_lines_carry_service_trace_and_account(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("demo")
    bind_context(trace_id="t-1", account_id="acct-9")
    try:
        get_logger("x").info("hello", product_id="p1")
    finally:
        clear_context("trace_id", "account_id")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "hello"
    assert line["service"] == "demo"
    assert line["trace_id"] == "t-1"
    assert line["account_id"] == "acct-9"
    assert line["product_id"] == "p1"
    assert line["level"] == "info"


def test_secret_looking_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("demo")
    get_logger().warning("login", password="hunter2", totp_code="123456", refresh_token="r")
    out = capsys.readouterr().err
    assert "hunter2" not in out
    assert "123456" not in out
    assert '"refresh_token": "[redacted]"' in out

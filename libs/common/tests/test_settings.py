from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from tmsp_common.settings import ServiceSettings, load_settings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TMSP_DEMO_", extra="ignore", frozen=True, populate_by_name=True
    )
    service_name: ClassVar[str] = "demo"
    grpc_port: int = 50051


def test_service_fields_use_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMSP_DEMO_GRPC_PORT", "6000")
    monkeypatch.setenv("TMSP_KAFKA_BOOTSTRAP", "kafka:9092")
    settings = load_settings(DemoSettings)
    assert settings.grpc_port == 6000
    assert settings.kafka_bootstrap == "kafka:9092"


def test_env_name_of_shared_and_own_fields() -> None:
    assert DemoSettings.env_name("kafka_bootstrap") == "TMSP_KAFKA_BOOTSTRAP"
    assert DemoSettings.env_name("mongo_url") == "TMSP_MONGO_URL"
    assert DemoSettings.env_name("grpc_port") == "TMSP_DEMO_GRPC_PORT"


def test_bad_value_exits_2_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMSP_DEMO_GRPC_PORT", "not-a-port")
    with pytest.raises(SystemExit) as exc:
        load_settings(DemoSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tmsp-demo: bad setting TMSP_DEMO_GRPC_PORT:")


def test_bad_shared_value_names_the_shared_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMSP_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit):
        load_settings(DemoSettings)
    assert "bad setting TMSP_LOG_LEVEL" in capsys.readouterr().err


def test_printing_settings_never_prints_the_mongo_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TMSP_MONGO_URL", "mongodb://user:hunter2@db:27017/")
    settings = load_settings(DemoSettings)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert settings.mongo_url.get_secret_value().endswith("@db:27017/")


def test_bad_setting_in_a_real_process_gives_one_line() -> None:
    code = (
        "from tmsp_common.settings import load_settings, ServiceSettings\n"
        "load_settings(ServiceSettings)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"TMSP_TOPIC_PREFIX": "bad prefix!", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "TMSP_TOPIC_PREFIX" in proc.stderr

"""Settings: defaults that work locally, one clear error on a bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tmsp_reporter.config import ReporterSettings


def test_defaults() -> None:
    s = ReporterSettings()
    assert s.grpc_port == 50055 and s.mongo_database == "tmsp_reporter"
    assert s.max_attachment_bytes == 700 * 1024 and s.public_keys() == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attachment_bytes", 2_000_000),
        ("auth_public_keys", "not json"),
        ("auth_public_keys", '["a"]'),
        ("portal_url", "ftp://x"),
        ("schedule_delay_hours", 30),
    ],
)
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        ReporterSettings(**{field: value})
    assert err.value.errors()[0]["loc"][0] == field


def test_secrets_are_not_printed() -> None:
    s = ReporterSettings(auth_public_keys='{"k": "PEM-SECRET"}')
    assert "PEM-SECRET" not in repr(s) and s.public_keys() == {"k": b"PEM-SECRET"}

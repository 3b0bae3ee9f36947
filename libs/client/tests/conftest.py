"""No test reads the developer's settings or session: the client's variables unset, the
session in the test's own directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmsp_client import config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The config directory the session file goes to (``TMSP_CLIENT_CONFIG_DIR``)."""
    for name in (*config.OPTIONS, "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMSP_CLIENT_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg"

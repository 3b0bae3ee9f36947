"""The correlator's build backend: setuptools, plus mypy (for mypyc) when a compiled build
is asked for (``TMSP_COMPILE=1``), so a plain build or editable install needs no compiler.

setuptools' documented way of adding build requirements dynamically; see ``setup.py``.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools.build_meta import *  # noqa: F403 - the backend's other hooks as they are

MYPYC = "mypy==2.4.1"
"""mypyc comes with mypy; the version the workspace lock pins for type checking."""


def _compiled() -> list[str]:
    # not setuptools' own hook: it runs setup.py, which needs mypyc before it is installed
    # (and declares nothing setup.py does not: no setup_requires)
    return [MYPYC] if os.environ.get("TMSP_COMPILE") == "1" else []


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _compiled()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _compiled()

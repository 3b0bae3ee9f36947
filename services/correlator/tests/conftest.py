from __future__ import annotations

import pytest

from tmsp_correlator import engine_build


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Against the compiled build (tests/integration/test_compiled_correlator.py runs these
    tests so), a test marked ``python_build`` is skipped: compiled code calls its module's
    functions directly and accepts only its own classes, so patching one or passing a
    stand-in observes nothing. The same source runs them in the Python build."""
    if engine_build() != "compiled":
        return
    skip = pytest.mark.skip(reason="observes the Python build from inside")
    for item in items:
        if item.get_closest_marker("python_build"):
            item.add_marker(skip)

"""Fixtures wiring the use cases to in-memory adapters and a fake clock."""

from __future__ import annotations

import pytest

from tmsp_ingest.testing import World, make_world


@pytest.fixture
def world() -> World:
    return make_world()

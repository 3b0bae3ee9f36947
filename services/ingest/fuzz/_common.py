"""Shared harness: a parser may only fail with InvalidRecord (or a known upload error)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from tmsp_ingest.domain.records import InvalidRecord


def run(target: Callable[[str], object]) -> None:
    def one_input(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        with contextlib.suppress(InvalidRecord):
            target(text)

    # instrument_imports() misses modules of the editable install (custom loader).
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

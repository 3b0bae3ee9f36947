"""Shared harness: a parser may only fail with InvalidRecord (or a known upload error).

Each target imports this module and its parser inside ``atheris.instrument_imports()``.
This module opens no such block of its own: leaving a nested block removes the import
hook, so the target's later imports (its parser) would run uninstrumented and the fuzzer
would be blind. :func:`require_instrumented` refuses to start in that case.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris  # type: ignore[import-not-found]

from tmsp_ingest.domain.records import InvalidRecord

MARK = "__ATHERIS_INSTRUMENTED__"


def require_instrumented(*functions: Callable[..., object]) -> None:
    """Exit with a message unless every function carries atheris' coverage hooks."""
    blind = [f.__qualname__ for f in functions if MARK not in f.__code__.co_consts]
    if blind:
        sys.exit(f"not instrumented (import them inside atheris.instrument_imports()): {blind}")


def run(target: Callable[[str], object], parser: Callable[..., object]) -> None:
    """Fuzz ``target`` (a thin wrapper around ``parser``) until libFuzzer stops."""
    require_instrumented(parser)

    def one_input(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        with contextlib.suppress(InvalidRecord):
            target(text)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

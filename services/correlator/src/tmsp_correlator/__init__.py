"""TMSP correlator service."""

from __future__ import annotations


def engine_build() -> str:
    """``compiled`` when the hot path runs as mypyc C extensions (the container image's
    build, see setup.py), else ``python``: what the worker's start-up line reports."""
    from tmsp_correlator.domain import correlation

    return "python" if correlation.__file__.endswith(".py") else "compiled"

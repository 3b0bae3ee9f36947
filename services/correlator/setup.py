"""Build of tmsp-correlator: plain Python by default; with ``TMSP_COMPILE=1`` the hot path
(flattening events, rule matching, window and incident logic, hit and state records) is
compiled to C extensions by mypyc from the same, type-checked sources. The container image
builds it compiled; development installs stay plain, so an edit takes effect at once.
docs/services/correlator.md, "Compiled build", has the figures and how it is tested."""

from __future__ import annotations

import os

from setuptools import setup

COMPILED_MODULES = [
    "src/tmsp_correlator/domain/fields.py",
    "src/tmsp_correlator/domain/sigma_compiler.py",
    "src/tmsp_correlator/domain/rules.py",
    "src/tmsp_correlator/domain/correlation.py",
    "src/tmsp_correlator/service_layer/events.py",
    "src/tmsp_correlator/adapters/hit_records.py",
]

if os.environ.get("TMSP_COMPILE") == "1":
    from mypyc.build import mypycify

    # the type check is lint's (mypy --strict); here third-party packages are not in the
    # isolated build environment, so their types compile as Any and no config applies
    ext_modules = mypycify(
        ["--config-file=", "--ignore-missing-imports", *COMPILED_MODULES],
        opt_level="3",
        group_name="tmsp_correlator",
    )
else:
    ext_modules = []

setup(ext_modules=ext_modules)

"""Build the correlator with its hot path compiled (mypyc) into a directory of its own.

    .venv/bin/python scripts/compiled_correlator.py      # prints the directory

Development installs of the correlator stay plain Python (an edit takes effect at once);
this builds the wheel the container image installs (``TMSP_COMPILE=1``, see
services/correlator/setup.py) and installs it, without dependencies, into
``.local/compiled/<sources hash>``. Put that directory first on ``PYTHONPATH`` and
``python -m tmsp_correlator`` runs the compiled build (it says so in its start-up line).
The benchmark runs both builds side by side; a test runs the correlator's tests and a real
worker against it. A build is reused while the sources it was built from are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "services" / "correlator"
UV = ROOT / ".local" / "tools" / "bin" / "uv"
BUILDS = ROOT / ".local" / "compiled"
KEPT_BUILDS = 3
"""Older builds beyond this many are removed."""


def sources_hash() -> str:
    """What the build is made from: the package's sources, rules and build files."""
    digest = hashlib.sha256()
    files = [PACKAGE / "setup.py", PACKAGE / "pyproject.toml", *(PACKAGE / "_build").glob("*.py")]
    files += sorted(p for p in (PACKAGE / "src").rglob("*") if p.is_file() and _is_source(p))
    for path in files:
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _is_source(path: Path) -> bool:
    return "__pycache__" not in path.parts and ".egg-info" not in str(path)


def build() -> Path:
    """The directory holding the compiled build of the current sources (built if missing)."""
    target = BUILDS / sources_hash()
    if (target / ".complete").exists():
        return target

    def say(msg: str) -> None:  # progress on stderr: stdout is the directory
        print(msg, file=sys.stderr, flush=True)

    say(f"==> compiling the correlator with mypyc (about a minute) into {target}")
    started = time.monotonic()
    env = {**os.environ, "TMSP_COMPILE": "1"}
    with tempfile.TemporaryDirectory(prefix="tmsp-wheel-") as out:
        subprocess.run(  # noqa: S603 - our own uv, fixed arguments
            [str(UV), "build", "--wheel", "--package", "tmsp-correlator", "--out-dir", out, "-q"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        wheels = list(Path(out).glob("tmsp_correlator-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one correlator wheel, found {wheels}")
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(  # noqa: S603
            [
                str(UV),
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(target),
                str(wheels[0]),
            ],
            cwd=ROOT,
            check=True,
        )
    (target / ".complete").write_text(f"{time.time()}\n")
    say(f"==> compiled in {time.monotonic() - started:.0f}s")
    _prune(keep=target)
    return target


def _prune(keep: Path) -> None:
    builds = sorted(
        (p for p in BUILDS.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[KEPT_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(build())


if __name__ == "__main__":
    main()

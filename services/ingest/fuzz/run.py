"""Run every ingest fuzz target for N seconds each; exit non-zero if any target crashed.

Usage: python services/ingest/fuzz/run.py [--seconds N] [target ...]
Crash inputs are written to services/ingest/fuzz/artifacts/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = sorted(p.stem for p in HERE.glob("fuzz_*.py"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30, help="time per target")
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    artifacts = HERE / "artifacts"
    artifacts.mkdir(exist_ok=True)
    failed = []
    for name in args.targets or TARGETS:
        print(f"== {name} ({args.seconds}s)", flush=True)
        code = subprocess.call(  # noqa: S603 - fixed interpreter and our own scripts
            [
                sys.executable,
                str(HERE / f"{name}.py"),
                f"-max_total_time={args.seconds}",
                f"-artifact_prefix={artifacts}/{name}-",
                "-rss_limit_mb=1024",
                "-max_len=4096",
            ],
            cwd=HERE,
        )
        if code != 0:
            failed.append(name)
    if failed:
        print("crashed: " + ", ".join(failed), file=sys.stderr)
        return 1
    print("all fuzz targets ran clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark (bench/bench_*.py) and print their figures side by side.

Each benchmark is a script that measures the system *and* a reference in the same run (the
raw argon2id hash rate, Kafka's own producer performance test, a decode-only consumer...)
and prints one JSON object as its last line of output. Targets are ratios to those
references, never absolute timings asserted in tests. Results are saved under
bench/results/<UTC timestamp>.json.

    make bench                       # all, default sizes
    make bench BENCH_ARGS="ingest"   # only bench_ingest.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(script: Path, extra: list[str]) -> dict[str, object]:
    print(f"==> {script.stem} ...", flush=True)
    started = time.monotonic()
    proc = subprocess.run(  # noqa: S603
        [sys.executable, str(script), *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,
    )
    elapsed = round(time.monotonic() - started, 1)
    result: dict[str, object] = {"seconds": elapsed, "exit_code": proc.returncode}
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            result.update(parsed)
            break
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-5:]
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="benchmark names (auth, ingest, ...)")
    parser.add_argument("--", dest="rest", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    results = {s.stem: run_one(s, args.rest) for s in scripts}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps(results, indent=2))
    print(f"results saved to {path.relative_to(HERE.parent)}")
    return 0 if all(r.get("exit_code") == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

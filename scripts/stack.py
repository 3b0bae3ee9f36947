"""Run the TMSP services of the local stack in the background: ``up``, ``down``, ``status``.

Used by ``make up`` / ``make down`` and by the demo. Kafka and FerretDB come from
deploy/local/infra.py (started first); this starts a loopback SMTP sink (the notifier's dev
sink, which stores every mail under .local/mail) and then auth, ingest, correlator, reporter
and notifier, each as ``python -m tmsp_<service>`` configured only through its environment, the
way it is deployed. Logs go to .local/logs/<service>.log, pids to .local/run/<service>.pid.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
RUN, LOGS = LOCAL / "run", LOCAL / "logs"
MAIL_DIR = LOCAL / "mail"
SMTP_PORT = int(os.environ.get("TMSP_LOCAL_SMTP_PORT", "2525"))


@dataclass
class Component:
    name: str
    argv: list[str]
    ready_text: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


def components() -> list[Component]:
    py = sys.executable
    return [
        Component(
            "smtp-sink",
            [py, "-m", "tmsp_notifier.devsink", "--port", str(SMTP_PORT), "--dir", str(MAIL_DIR)],
            "listening",
        ),
        Component("auth", [py, "-m", "tmsp_auth"], "service ready"),
        Component("ingest", [py, "-m", "tmsp_ingest"], "service ready"),
        Component("correlator", [py, "-m", "tmsp_correlator"], "service ready"),
        Component("reporter", [py, "-m", "tmsp_reporter"], "service ready"),
        Component(
            "notifier",
            [py, "-m", "tmsp_notifier"],
            "service ready",
            {"TMSP_NOTIFIER_SMTP_PORT": str(SMTP_PORT)},
        ),
    ]


def start(c: Component, timeout: float = 90.0) -> None:
    if c.pid():
        print(f"stack: {c.name} already running (pid {c.pid()})")
        return
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    offset = c.log_file.stat().st_size if c.log_file.exists() else 0
    env = {**os.environ, "TMSP_LOG_FORMAT": "json", **c.env}
    with c.log_file.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            c.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    c.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    print(f"stack: starting {c.name}...", end="", flush=True)
    while time.monotonic() < deadline:
        with c.log_file.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        if c.ready_text in text:
            print(f" ready (pid {proc.pid})")
            return
        if proc.poll() is not None:
            print(" failed")
            tail = "\n".join(text.strip().splitlines()[-15:])
            raise SystemExit(f"stack: {c.name} exited with {proc.returncode}:\n{tail}")
        print(".", end="", flush=True)
        time.sleep(0.5)
    print(" timed out")
    raise SystemExit(f"stack: {c.name} not ready after {timeout:.0f}s; see {c.log_file}")


def stop(c: Component, timeout: float = 30.0) -> None:
    pid = c.pid()
    if pid is None:
        c.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and c.pid():
        time.sleep(0.2)
    if c.pid():
        os.killpg(pid, signal.SIGKILL)
    c.pid_file.unlink(missing_ok=True)
    print(f"stack: {c.name} stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    comps = components()
    if args.command == "up":
        for c in comps:
            start(c)
    elif args.command == "down":
        for c in reversed(comps):
            stop(c)
    else:
        for c in comps:
            pid = c.pid()
            print(f"{c.name:<11} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

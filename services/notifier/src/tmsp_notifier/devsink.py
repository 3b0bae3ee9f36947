"""A local mail sink for development and ``make demo``.

``python -m tmsp_notifier.devsink --port 2525 --dir .local/mail`` accepts every mail on
loopback, stores it as ``<timestamp>-<message-id>.eml`` in the directory and prints one line
per mail. Never use it as a real mail server: it accepts anything from anyone on loopback.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SinkHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content: bytes = envelope.original_content or envelope.content
        msg = email.message_from_bytes(content, policy=email.policy.default)
        mid = re.sub(r"[^A-Za-z0-9._-]", "", str(msg.get("Message-ID", "")))[:80] or "no-id"
        self.count += 1
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self.count:05d}-{mid}.eml"
        (self.directory / name).write_bytes(content)
        print(
            f"mail #{self.count} to {', '.join(envelope.rcpt_tos)} "
            f"subject={msg.get('Subject', '')!r} -> {self.directory / name}",
            flush=True,
        )
        return "250 2.0.0 stored"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmsp_notifier.devsink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--dir", default=".local/mail")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(SinkHandler(directory), hostname=args.host, port=args.port)
    controller.start()
    print(f"devsink listening on {args.host}:{args.port}, storing mail in {directory}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

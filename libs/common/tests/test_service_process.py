"""What a "never logged" check reads of a service's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tmsp_common.testing import ServiceProcess, process_memory_mib


def test_logged_content_leaves_out_timestamps_and_keeps_everything_else(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    lines = [
        json.dumps({"timestamp": "2026-12-02T06:47:49.593000Z", "message": "mail sent"}),
        json.dumps({"timestamp": "2026-12-02T06:47:50.1Z", "message": "code 593000 sent"}),
        "a plain line with 593000",
    ]
    log.write_text("\n".join(lines) + "\n")
    proc = ServiceProcess("svc", {}, log_path=log)
    logged = proc.logged_content
    assert "06:47:49" not in logged and "mail sent" in logged
    assert logged.count("593000") == 2  # in a message and in a plain line, never a clock


def test_process_memory_counts_what_the_process_holds() -> None:
    """What the benchmarks report as a worker's resident memory: 64 MiB touched here show."""
    before, _ = process_memory_mib(os.getpid())
    held = bytearray(b"x") * (64 << 20)  # every page written
    now, peak = process_memory_mib(os.getpid())
    assert now - before >= 60 and peak >= now
    del held

"""What a "never logged" check reads of a service's output."""

from __future__ import annotations

import json
from pathlib import Path

from tmsp_common.testing import ServiceProcess


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

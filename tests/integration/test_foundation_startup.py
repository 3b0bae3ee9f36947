"""Start-up failures: one clear line and a distinct exit code, never a stack-trace loop."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tmsp_common.testing import Infra

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

SERVICE = """
from tmsp_common.lifecycle import run_service
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.metrics import start_metrics_server
from tmsp_common.settings import ServiceSettings

async def main(settings, stop):
    start_metrics_server(settings.metrics_port, "127.0.0.1")
    producer = EventProducer(settings.kafka_bootstrap, service="probe")
    await producer.start(timeout_s=3)

run_service(ServiceSettings, main)
"""


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SERVICE],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unreachable_broker_stops_with_one_line() -> None:
    proc = run({"TMSP_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("tmsp-tmsp: cannot reach Kafka at 127.0.0.1:1")
    assert "Traceback" not in proc.stderr


def test_bad_setting_stops_before_touching_the_broker() -> None:
    proc = run({"TMSP_LOG_FORMAT": "xml"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tmsp-tmsp: bad setting TMSP_LOG_FORMAT: Input should be 'json' or 'console'"
    ]


def test_reachable_broker_starts(infra: Infra) -> None:
    proc = run({"TMSP_KAFKA_BOOTSTRAP": infra.kafka_bootstrap})
    assert proc.returncode == 0, proc.stderr


def test_a_port_taken_stops_with_one_line_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the base settings have no prefix; a service's is TMSP_<SERVICE>_METRICS_PORT
        proc = run({"METRICS_PORT": str(port), "TMSP_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line == (
        f"tmsp-tmsp: cannot listen: [Errno 98] metrics endpoint 127.0.0.1:{port}: "
        "Address already in use"
    )

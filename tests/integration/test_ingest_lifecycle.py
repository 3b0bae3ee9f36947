"""The gateway's process contract: exit 2 on a bad setting, 3 when Kafka is unreachable,
0 after SIGTERM with a drain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmsp_common.testing import ServiceProcess, free_port
from tmsp_ingest.harness import Gateway

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo]


def test_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    proc = ServiceProcess("tmsp_ingest", env={"TMSP_INGEST_SFTP_PORT": "abc"}).start()
    assert proc.proc is not None and proc.proc.wait(30) == 2
    assert "TMSP_INGEST_SFTP_PORT" in proc.logs


def test_unreachable_kafka_exits_3(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "TMSP_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "TMSP_MONGO_URL": infra.mongo_url,
        "TMSP_INGEST_DATA_DIR": str(tmp_path),
    }
    proc = ServiceProcess("tmsp_ingest", env=env).start()
    assert proc.proc is not None and proc.proc.wait(60) == 3
    assert "cannot reach Kafka" in proc.logs


def test_sigterm_drains_and_exits_0(infra, names, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap, infra.mongo_url, names.prefix, names.database("ingest"), tmp_path
    ).start()
    assert gw.process is not None
    assert gw.process.terminate() == 0
    assert "draining" in gw.process.logs and '"stopped"' in gw.process.logs

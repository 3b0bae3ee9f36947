"""The reporter's use cases on the real FerretDB and Kafka with an injected clock (log
maintenance purge, forensic data too; scheduled generation once across two replicas, stale
takeover, deleted accounts keep their reports, the attachment bound), the CLI, and the
process contract (exit 2 / exit 3 / NOT_SERVING on SIGTERM then exit 0)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pypdf import PdfReader

from tmsp.events.v1 import (
    accounts_pb2,
    detections_pb2,
    incidents_pb2,
    notifications_pb2,
    products_pb2,
    status_pb2,
)
from tmsp_common.clock import FakeClock
from tmsp_common.forensics import ForensicFile
from tmsp_common.grpc_client import channel
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.envelope import to_timestamp, unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import LOG_MAINTENANCE, NOTIFICATION_REQUESTS
from tmsp_common.mongo import close, connect
from tmsp_common.testing import REPO_ROOT, Infra, ServiceProcess, TopicReader, free_port
from tmsp_reporter import bootstrap
from tmsp_reporter.adapters.mongo import create_indexes
from tmsp_reporter.bootstrap import App
from tmsp_reporter.config import ReporterSettings
from tmsp_reporter.domain.forensics import MAX_CHUNK_BYTES
from tmsp_reporter.domain.model import Compliance, ReportSchedule
from tmsp_reporter.domain.periods import ReportKind
from tmsp_reporter.domain.retention import LogMaintenance
from tmsp_reporter.testing import reporter_env

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo]

T0 = datetime(2026, 6, 10, 6, 0, tzinfo=UTC)  # 08:00 in Berlin, a Wednesday
LONG_AGO = T0 - timedelta(days=60)
TDA = products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE


def snapshot(account_id: str, *, deleted: bool = False, version: int = 1) -> Any:
    return accounts_pb2.AccountSnapshot(
        account_id=account_id,
        name=account_id.capitalize(),
        company_name="Acme Ltd",
        time_zone="Europe/Berlin",
        deleted=deleted,
        version=version,
    )


def incident(iid: str, at: datetime) -> Any:
    inc = incidents_pb2.Incident(
        incident_id=iid,
        account_id="acme",
        title=f"Trojan beacon {iid}",
        severity=detections_pb2.SEVERITY_HIGH,
        status=incidents_pb2.INCIDENT_STATUS_NEW,
        version=1,
    )
    inc.first_seen.CopyFrom(to_timestamp(at))
    inc.last_seen.CopyFrom(to_timestamp(at))
    return inc


class World:
    def __init__(self, settings: ReporterSettings, db: Any, producer: EventProducer) -> None:
        self.settings = settings
        self.db = db
        self.producer = producer

    def app(self, clock: FakeClock, **overrides: Any) -> App:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return bootstrap.build(settings, self.db, self.producer, clock=clock)


@pytest.fixture
async def world(infra: Infra, names: Any) -> AsyncIterator[World]:
    settings = ReporterSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        topic_prefix=names.prefix,
        mongo_database=names.database("reporter"),
    )
    db = await connect(infra.mongo_url, settings.mongo_database)
    await create_indexes(db)
    await ensure_topics(
        infra.kafka_bootstrap, [NOTIFICATION_REQUESTS, LOG_MAINTENANCE], prefix=names.prefix
    )
    producer = EventProducer(infra.kafka_bootstrap, service="test", topic_prefix=names.prefix)
    await producer.start()
    try:
        yield World(settings, db, producer)
    finally:
        await producer.stop()
        await db.client.drop_database(settings.mongo_database)
        await close(db)


async def test_purge_by_retention_keeps_reports_of_deleted_accounts(world: World) -> None:
    clock = FakeClock(T0)
    app = world.app(clock)
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    await app.read.apply_incident(incident("old", T0 - timedelta(days=10)), T0)
    await app.read.apply_incident(incident("recent", T0 - timedelta(days=2)), T0)
    cleared = incidents_pb2.NonconformingEndpoint(
        account_id="acme", endpoint_key="pc-1", cleared=True
    )
    cleared.updated_at.CopyFrom(to_timestamp(T0 - timedelta(days=9)))
    await app.read.apply_nonconforming(cleared, T0)
    report, created = await app.reports.generate("acme", ReportKind.DAILY_ADMINISTRATIVE)
    assert created and report["state"] == "ready"
    # the account is deleted: its report stays
    await app.read.apply_account(snapshot("acme", deleted=True, version=2), T0)
    await app.maintenance.set(LogMaintenance(report_retention_days=30, log_retention_days=7))

    result = await app.maintenance.purge()
    assert (result.reports, result.incidents, result.endpoints) == (0, 1, 1)
    remaining = await app.read.list_incidents(None, limit=10)
    assert [i.incident_id for i in remaining] == ["recent"]
    assert await app.reports.store.get(report["_id"]) is not None

    clock.advance(timedelta(days=31))
    result = await app.maintenance.purge()
    assert result.reports == 1 and result.incidents == 1
    assert await app.reports.store.get(report["_id"]) is None
    assert [c async for c in app.reports.store.pdf_chunks(report["_id"])] == []


async def test_replays_write_nothing_and_log_maintenance_removes_old_forensic_data(
    world: World,
) -> None:
    """Forensic data goes with the incidents and logs: log retention, by when the log server
    received it (the upload and its chunks); a replayed upload writes nothing."""
    clock = FakeClock(T0)
    app = world.app(clock)
    db = world.db
    for upload_id, age_days in (("fd-old", 10), ("fd-new", 2)):
        content = os.urandom(MAX_CHUNK_BYTES + 10)
        file = ForensicFile(
            upload_id,
            "task-1",
            "acct-a",
            "tmi-a1",
            f"{upload_id}.bin",
            hashlib.sha256(content).hexdigest(),
            len(content),
            2,
        )
        for index in (0, 1, 1, 0):
            piece = content[index * MAX_CHUNK_BYTES : (index + 1) * MAX_CHUNK_BYTES]
            await app.forensics.receive(
                file, index, piece, protocol=1, received_at=T0 - timedelta(days=age_days)
            )
    before = await db["forensic_uploads"].find_one({"_id": "fd-new"})
    assert before["complete"] is True and sorted(before["received"]) == [0, 1]
    assert await db["forensic_chunks"].count_documents({}) == 4
    # a replay of the whole upload writes nothing
    await app.forensics.receive(file, 0, b"ignored", protocol=1, received_at=T0)
    assert await db["forensic_uploads"].find_one({"_id": "fd-new"}) == before
    assert await db["forensic_chunks"].count_documents({}) == 4

    await app.maintenance.set(LogMaintenance(report_retention_days=30, log_retention_days=7))
    result = await app.maintenance.purge()
    assert result.forensic_files == 1
    remaining = await app.forensics.list_files("acct-a", "", limit=10, after=None)
    assert [r.file.upload_id for r in remaining] == ["fd-new"]
    assert {d["upload_id"] async for d in db["forensic_chunks"].find({}, {"upload_id": 1})} == {
        "fd-new"
    }
    clock.advance(timedelta(days=6))
    assert (await app.maintenance.purge()).forensic_files == 1
    assert await db["forensic_chunks"].count_documents({}) == 0


async def test_scheduled_reports_generated_once_by_two_replicas(
    world: World, infra: Infra, names: Any
) -> None:
    clock = FakeClock(T0)
    replica_a, replica_b = world.app(clock), world.app(clock, max_attachment_bytes=0)
    await replica_a.read.apply_account(snapshot("acme"), LONG_AGO)
    await replica_a.read.apply_incident(incident("y1", T0 - timedelta(days=1)), T0)
    await replica_a.reports.add_recipient("acme", "soc@acme.example")

    made = await asyncio.gather(
        replica_a.reports.run_schedules(), replica_b.reports.run_schedules()
    )
    assert sum(made) == 3  # daily (9 June), weekly (1-7 June), monthly (May)
    assert await replica_a.reports.run_schedules() == 0  # a restart finds them
    reports = await replica_a.reports.list_reports("acme", limit=10, after=None)
    assert sorted(r["kind"] for r in reports) == sorted(k.value for k in ReportKind if k.periodic)
    assert all(r["state"] == "ready" and r.get("notified") for r in reports)
    daily = next(r for r in reports if r["kind"] == "daily_administrative")
    assert daily["period_start"] == datetime(2026, 6, 8, 22, 0, tzinfo=UTC)

    async with TopicReader(infra.kafka_bootstrap, NOTIFICATION_REQUESTS, names.prefix) as reader:
        await reader.read_until(lambda rs: len(rs) >= 3, timeout=15)
        await asyncio.sleep(1)
        await reader.read_until(lambda rs: True, timeout=1)
    requests = [unwrap(r.value, notifications_pb2.NotificationRequest)[1] for r in reader.records]
    assert len(requests) == 3
    assert {r.notification_id for r in requests} == {f"report-ready-{r['_id']}" for r in reports}
    for r in requests:
        assert list(r.recipients) == ["soc@acme.example"]
        assert r.params["download_url"].endswith(r.notification_id.removeprefix("report-ready-"))
        # whichever replica generated it: one attaches (bound 700 KiB), the other links only
        assert len(r.attachments) in (0, 1)
        if r.attachments:
            assert PdfReader(io.BytesIO(r.attachments[0].content)).pages


async def test_new_account_gets_no_report_of_periods_before_it_existed(world: World) -> None:
    clock = FakeClock(T0)
    app = world.app(clock)
    await app.read.apply_account(snapshot("acme"), T0)
    assert await app.reports.run_schedules() == 0
    clock.set(datetime(2026, 6, 11, 2, 0, tzinfo=UTC))  # 04:00 Berlin, after the delay
    assert await app.reports.run_schedules() == 1
    reports = await app.reports.list_reports("acme", limit=10, after=None)
    assert [(r["kind"], r["period_start"]) for r in reports] == [
        ("daily_administrative", datetime(2026, 6, 9, 22, 0, tzinfo=UTC))
    ]


async def test_stale_generation_is_taken_over(world: World) -> None:
    clock = FakeClock(T0)
    app = world.app(clock)
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    period = app.reports.period_for(ReportKind.DAILY_ADMINISTRATIVE, "Europe/Berlin", None, None)
    from tmsp_reporter.domain.periods import report_id

    rid = report_id("acme", ReportKind.DAILY_ADMINISTRATIVE, period)
    await app.reports.store.create(
        {
            "_id": rid,
            "account_id": "acme",
            "kind": "daily_administrative",
            "period_start": period.start,
            "period_end": period.end,
            "time_zone": "Europe/Berlin",
            "state": "generating",
            "attempt": 0,
            "claimed_at": T0 - timedelta(minutes=1),
            "created_at": T0 - timedelta(minutes=1),
        }
    )
    doc, created = await app.reports.generate("acme", ReportKind.DAILY_ADMINISTRATIVE)
    assert not created and doc["state"] == "generating"  # someone is still on it
    clock.advance(timedelta(minutes=15))
    doc, created = await app.reports.generate("acme", ReportKind.DAILY_ADMINISTRATIVE)
    assert created and doc["state"] == "ready" and doc["attempt"] == 1


async def test_deregistered_products_leave_the_screen_and_the_reports(world: World) -> None:
    clock = FakeClock(T0)
    app = world.app(clock)
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    active, gone = products_pb2.PRODUCT_STATE_ACTIVE, products_pb2.PRODUCT_STATE_DEREGISTERED
    tda, tmi = TDA, products_pb2.PRODUCT_KIND_THREAT_MITIGATOR
    # the old appliance's last heartbeat (compliance off) and upload outlive its registration
    for pid, kind, state, compliance, uploaded in [
        ("tda-new", tda, active, True, T0 - timedelta(minutes=30)),
        ("tda-old", tda, gone, False, T0 - timedelta(minutes=10)),
        ("tmi-1", tmi, active, None, None),
    ]:
        await app.read.apply_product(
            products_pb2.ProductSnapshot(
                product_id=pid, account_id="acme", kind=kind, state=state, name=pid, version=2
            )
        )
        hb = status_pb2.Heartbeat(product_id=pid, account_id="acme", product_kind=kind)
        if compliance is not None:
            hb.security_compliance_enabled = compliance
        await app.read.apply_heartbeat(hb, T0 - timedelta(days=1))
        if uploaded is not None:
            up = status_pb2.UploadReceived(product_id=pid, account_id="acme")
            up.finished_at.CopyFrom(to_timestamp(uploaded))
            await app.read.apply_upload(up, uploaded)

    row = await app.portal.get_account("acme")
    assert (row.compliance, row.product_count) == (Compliance.ENABLED, 2)
    assert row.last_received == T0 - timedelta(minutes=30)
    period = app.reports.period_for(ReportKind.DAILY_ADMINISTRATIVE, "Europe/Berlin", None, None)
    content = await app.reports.content("acme", ReportKind.DAILY_ADMINISTRATIVE, period)
    assert content.compliance is Compliance.ENABLED
    assert [p.product_id for p in content.products] == ["tda-new", "tmi-1"]
    # the product list itself still shows the deregistered one, marked
    listed = {p.product_id: p.state for p in await app.portal.list_products("acme")}
    assert listed == {"tda-new": active, "tda-old": gone, "tmi-1": active}


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tmsp_reporter", *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_cli_generates_with_progress(world: World, infra: Infra, tmp_path: Path) -> None:
    app = world.app(FakeClock(datetime.now(UTC)))
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    env = {**infra.env(), "TMSP_REPORTER_MONGO_DATABASE": world.settings.mongo_database}
    out = tmp_path / "daily.pdf"
    first = await asyncio.to_thread(
        _run, env, "generate", "--account", "acme", "--kind", "daily", "--output", str(out)
    )
    assert first.returncode == 0, first.stderr
    assert "collecting data for" in first.stdout and "rendering the PDF" in first.stdout
    assert "generated: rpt-" in first.stdout
    assert "Daily administrative report: Acme" in PdfReader(out).pages[0].extract_text()
    second = await asyncio.to_thread(_run, env, "generate", "--account", "acme", "--kind", "daily")
    assert second.returncode == 0 and "already there" in second.stdout
    unknown = await asyncio.to_thread(_run, env, "generate", "--account", "nope", "--kind", "daily")
    assert unknown.returncode == 2 and "account not found" in unknown.stderr


def test_bad_setting_exits_2_naming_the_variable() -> None:
    proc = ServiceProcess("tmsp_reporter", env={"TMSP_REPORTER_GRPC_PORT": "abc"}).start()
    assert proc.proc is not None and proc.proc.wait(30) == 2
    assert "bad setting TMSP_REPORTER_GRPC_PORT" in proc.logs


def test_unreachable_mongo_exits_3(infra: Infra) -> None:
    env = {**infra.env(), "TMSP_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/"}
    proc = ServiceProcess("tmsp_reporter", env=env).start()
    assert proc.proc is not None and proc.proc.wait(60) == 3
    assert "cannot reach MongoDB at mongodb://127.0.0.1" in proc.logs


@pytest.mark.grpc
async def test_sigterm_sets_not_serving_then_exits_0(
    infra: Infra, names: Any, tmp_path: Path
) -> None:
    port = free_port()
    env = reporter_env(
        infra_env=infra.env(),
        prefix=names.prefix,
        database=names.database("reporter"),
        grpc_port=port,
        tls_dir=str(tmp_path / "tls"),
        grpc_tls="false",
    )
    proc = ServiceProcess("tmsp_reporter", env).start()
    proc.wait_for_log("service ready", timeout=90)
    ch = channel(f"127.0.0.1:{port}", tls=False)
    stub = health_pb2_grpc.HealthStub(ch)
    check = health_pb2.HealthCheckRequest(service="tmsp.reporter.v1.ReporterService")
    assert (await stub.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    seen = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.alive():
        try:
            seen.add((await stub.Check(check, timeout=1)).status)
        except grpc.aio.AioRpcError:
            break
        if health_pb2.HealthCheckResponse.NOT_SERVING in seen:
            break
        await asyncio.sleep(0.05)
    await ch.close()
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    assert proc.proc.wait(30) == 0  # one SIGTERM: drained, not killed
    assert '"stopped"' in proc.logs


async def test_large_reports_are_linked_not_attached(
    world: World, infra: Infra, names: Any
) -> None:
    clock = FakeClock(T0)
    app = world.app(clock, max_attachment_bytes=1024)
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    doc, _ = await app.reports.generate(
        "acme",
        ReportKind.ON_DEMAND,
        start=T0 - timedelta(days=3),
        end=T0,
        notify=True,
    )
    assert doc["size"] > 1024 and doc["notified"]
    async with TopicReader(infra.kafka_bootstrap, NOTIFICATION_REQUESTS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 1, timeout=15)
    _, request = unwrap(records[0].value, notifications_pb2.NotificationRequest)
    assert not request.attachments and "attached" not in request.params
    assert request.params["download_url"] == f"https://localhost:8443/reports/{doc['_id']}"
    assert request.params["period"] == "2026-06-07 to 2026-06-10"


async def test_a_scheduled_report_that_fails_is_retried_with_backoff_not_every_pass(
    world: World,
) -> None:
    clock = FakeClock(T0)
    app = world.app(clock)
    await app.read.apply_account(snapshot("acme"), LONG_AGO)
    await app.reports.set_schedule(
        ReportSchedule("acme", weekly_executive=False, monthly_executive=False)
    )
    render, calls = app.reports.render, []

    def failing_twice(content: Any) -> Any:
        calls.append(clock.now())
        if len(calls) <= 2:
            raise RuntimeError("renderer broke")
        return render(content)

    app.reports.render = failing_twice
    assert await app.reports.run_schedules() == 0
    assert await app.reports.run_schedules() == 0  # same minute: not tried again
    clock.advance(timedelta(seconds=59))
    assert await app.reports.run_schedules() == 0
    assert len(calls) == 1
    clock.advance(timedelta(seconds=1))  # 1 min after the first failure
    assert await app.reports.run_schedules() == 0
    clock.advance(timedelta(seconds=119))  # the second failure waits 2 min
    assert await app.reports.run_schedules() == 0
    assert len(calls) == 2
    clock.advance(timedelta(seconds=1))
    assert await app.reports.run_schedules() == 1
    assert calls == [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)]
    (report,) = await app.reports.list_reports("acme", limit=10, after=None)
    assert report["state"] == "ready"


async def test_pattern_changes_left_unpublished_are_published_by_the_republisher(
    world: World, infra: Infra, names: Any
) -> None:
    """A put answered UNAVAILABLE and never repeated stays stored unpublished: the reporter's
    periodic republish finds it in Mongo and puts it on the real topic."""
    from tmsp_common.kafka.topics import CLEANUP_PATTERNS
    from tmsp_reporter.adapters.mongo_patterns import PatternStore
    from tmsp_reporter.domain.patterns import CleanupPatternEntry

    await ensure_topics(infra.kafka_bootstrap, [CLEANUP_PATTERNS], prefix=names.prefix)
    app = world.app(FakeClock(T0))
    store = PatternStore(world.db)

    def entry(name: str, content: bytes, *, published: bool) -> CleanupPatternEntry:
        return CleanupPatternEntry(
            account_id="acme",
            name=name,
            description="",
            content_sha256=hashlib.sha256(content).hexdigest(),
            size=len(content),
            version=1,
            updated_at=T0,
            updated_by_user_id="op-1",
            published=published,
        )

    await store.save(entry("on-the-server", b"old", published=True), b"old", 0)
    await store.save(entry("left-behind", b"kill: x.exe\n", published=False), b"kill: x.exe\n", 0)
    assert await app.patterns.republish() == 1
    assert await app.patterns.republish() == 0
    async with TopicReader(infra.kafka_bootstrap, CLEANUP_PATTERNS, names.prefix) as reader:
        (snap,) = await reader.read_events(status_pb2.CleanupPattern, 1, timeout=30)
    assert (snap.name, snap.version, snap.content) == ("left-behind", 1, b"kill: x.exe\n")
    assert (await app.patterns.for_task("acme", "left-behind")).published

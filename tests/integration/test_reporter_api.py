"""The reporter as deployed (subprocess, TLS gRPC, real Ed25519 tokens) over Kafka and
FerretDB: projections from published events, the Customer Accounts screen, tenant
isolation, read-only analysts, analysts' incident triage, operator-only mitigation tasks,
reports end to end; the cleanup pattern catalogue (puts and removals on the cleanup-patterns
topic, custom cleanup tasks carrying the pattern's SHA-256) and forensic data (chunks
published as the ingest gateway does, verified, listed, downloaded by operators only)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader

from tmsp.events.v1 import (
    accounts_pb2,
    detections_pb2,
    incidents_pb2,
    maintenance_pb2,
    notifications_pb2,
    products_pb2,
    status_pb2,
)
from tmsp.reporter.v1 import reporter_pb2, reporter_pb2_grpc
from tmsp_common.authn import Principal, Role
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka.consumer import DLQ_REASON
from tmsp_common.kafka.envelope import to_timestamp, unwrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import (
    ACCOUNTS,
    CLEANUP_PATTERNS,
    FORENSIC_DATA,
    HEARTBEATS,
    INCIDENT_COUNTS,
    INCIDENT_STATUS_CHANGES,
    INCIDENTS,
    LOG_MAINTENANCE,
    MITIGATION_TASKS,
    NONCONFORMING_ENDPOINTS,
    NOTIFICATION_REQUESTS,
    PRODUCT_LIVENESS,
    PRODUCTS,
    UPLOADS,
)
from tmsp_common.testing import Infra, ServiceProcess, TopicReader, free_port, wait_until
from tmsp_common.tokens import TokenSigner, public_pem
from tmsp_reporter.domain.forensics import MAX_CHUNK_BYTES
from tmsp_reporter.domain.patterns import MAX_PATTERN_BYTES
from tmsp_reporter.entrypoints.scoping import POLICY
from tmsp_reporter.testing import reporter_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.grpc,
    pytest.mark.tls,
]

NOW = datetime.now(UTC).replace(microsecond=0)
TDA = products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE
TMI = products_pb2.PRODUCT_KIND_THREAT_MITIGATOR
Stub = reporter_pb2_grpc.ReporterServiceStub


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(Ed25519PrivateKey.generate(), "k-test")


@pytest.fixture
async def producer(infra: Infra, names: Any) -> AsyncIterator[EventProducer]:
    async with EventProducer(infra.kafka_bootstrap, service="test", topic_prefix=names.prefix) as p:
        yield p


@pytest.fixture
async def reporter(
    infra: Infra, names: Any, tmp_path: Path, signer: TokenSigner
) -> AsyncIterator[tuple[ServiceProcess, Stub]]:
    tls_dir = str(tmp_path / "tls")
    port = free_port()
    env = reporter_env(
        infra_env=infra.env(),
        prefix=names.prefix,
        database=names.database("reporter"),
        grpc_port=port,
        tls_dir=tls_dir,
        public_keys={signer.kid: public_pem(signer._key).decode()},  # noqa: SLF001
        scheduler_enabled="false",
    )
    proc = ServiceProcess("tmsp_reporter", env).start()
    proc.wait_for_log("service ready", timeout=90)
    ch = channel(f"127.0.0.1:{port}", tls=True, tls_dir=tls_dir)
    try:
        yield proc, Stub(ch)
    finally:
        await ch.close()
        assert proc.terminate() == 0, proc.logs[-3000:]


def token(signer: TokenSigner, account: str, *roles: Role) -> tuple[tuple[str, str], ...]:
    return bearer(
        signer.issue(Principal(f"u-{account}-{roles[0].value}", account, frozenset(roles)))
    )


async def status_of(call: Any, request: Any, metadata: Any) -> grpc.StatusCode:
    """The status of a unary or server-streaming call (OK when it succeeded)."""
    result = call(request, metadata=metadata)
    try:
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def incidents_projected(stub: Stub, metadata: Any, count: int) -> None:
    """Wait until the read model shows ``count`` incidents to the caller."""

    async def projected() -> bool:
        r = await stub.ListIncidents(
            reporter_pb2.ListIncidentsRequest(page_size=100), metadata=metadata
        )
        return len(r.incidents) == count

    await wait_until(projected, timeout=60)


def account(account_id: str, name: str, *, deleted: bool = False, version: int = 1) -> Any:
    snap = accounts_pb2.AccountSnapshot(
        account_id=account_id,
        name=name,
        company_name=f"{name} Ltd",
        services=["threat-discovery", "threat-mitigation"],
        managed_by_email=f"admin@{name.lower()}.example",
        time_zone="Europe/Berlin",
        version=version,
        deleted=deleted,
    )
    snap.valid_from.CopyFrom(to_timestamp(NOW - timedelta(days=100)))
    snap.valid_until.CopyFrom(to_timestamp(NOW + timedelta(days=265)))
    return snap


def product(pid: str, account_id: str, kind: int, name: str) -> Any:
    return products_pb2.ProductSnapshot(
        product_id=pid,
        account_id=account_id,
        kind=kind,  # type: ignore[arg-type]
        name=name,
        state=products_pb2.PRODUCT_STATE_ACTIVE,
        version=1,
    )


def incident(iid: str, account_id: str, severity: int, at: datetime, version: int = 1) -> Any:
    inc = incidents_pb2.Incident(
        incident_id=iid,
        account_id=account_id,
        title=f"=cmd|' /C calc'!A0 {iid}" if iid.endswith("x") else f"Worm outbreak {iid}",
        severity=severity,  # type: ignore[arg-type]
        status=incidents_pb2.INCIDENT_STATUS_NEW,
        event_count=3,
        endpoints=[detections_pb2.Endpoint(host=f"pc-{iid}", ip="10.0.0.5")],
        attack_tags=["attack.lateral_movement", "attack.t1021"],
        recommended_actions=["Isolate the endpoint", "Reset credentials"],
        rule_ids=["rule-worm"],
        version=version,
    )
    inc.first_seen.CopyFrom(to_timestamp(at))
    inc.last_seen.CopyFrom(to_timestamp(at + timedelta(minutes=5)))
    for n in range(3):
        step = inc.timeline.add(
            event_id=f"{iid}-e{n}", rule_id="rule-worm", summary=f"SMB spread step {n}"
        )
        step.at.CopyFrom(to_timestamp(at + timedelta(minutes=n)))
        step.endpoint.CopyFrom(detections_pb2.Endpoint(host=f"pc-{iid}"))
    return inc


async def publish_fixture(producer: EventProducer) -> None:
    """Two accounts with products, heartbeats, uploads, incidents, counts, endpoints."""
    await producer.publish(ACCOUNTS, account("acct-a", "Acme"), key="acct-a")
    await producer.publish(ACCOUNTS, account("acct-b", "Beta"), key="acct-b")
    for pid, acct, kind, name in [
        ("tda-a1", "acct-a", TDA, "Sensor 1"),
        ("tda-a2", "acct-a", TDA, "Sensor 2"),
        ("tmi-a1", "acct-a", TMI, "Mitigator"),
        ("tda-b1", "acct-b", TDA, "Beta sensor"),
    ]:
        await producer.publish(PRODUCTS, product(pid, acct, kind, name), key=pid)
    for pid, acct, sc in [("tda-a1", "acct-a", True), ("tda-a2", "acct-a", False)]:
        hb = status_pb2.Heartbeat(
            product_id=pid, account_id=acct, product_kind=TDA, security_compliance_enabled=sc
        )
        hb.received_at.CopyFrom(to_timestamp(NOW - timedelta(minutes=1)))
        await producer.publish(HEARTBEATS, hb, key=pid, account_id=acct)
    hb_b = status_pb2.Heartbeat(
        product_id="tda-b1", account_id="acct-b", product_kind=TDA, security_compliance_enabled=True
    )
    hb_b.received_at.CopyFrom(to_timestamp(NOW))
    await producer.publish(HEARTBEATS, hb_b, key="tda-b1")
    for pid, acct, ago in [
        ("tda-a1", "acct-a", 30),
        ("tda-a2", "acct-a", 10),
        ("tda-a1", "acct-a", 60),
    ]:
        up = status_pb2.UploadReceived(product_id=pid, account_id=acct, records_accepted=10)
        up.finished_at.CopyFrom(to_timestamp(NOW - timedelta(minutes=ago)))
        await producer.publish(UPLOADS, up, key=pid)
    live = incidents_pb2.ProductLiveness(
        product_id="tmi-a1", account_id="acct-a", state=incidents_pb2.PRODUCT_LIVENESS_STATE_OFFLINE
    )
    live.since.CopyFrom(to_timestamp(NOW - timedelta(minutes=20)))
    await producer.publish(PRODUCT_LIVENESS, live, key="tmi-a1")
    yesterday = NOW - timedelta(days=1)
    for iid, acct, sev, at in [
        ("inc-a1", "acct-a", detections_pb2.SEVERITY_HIGH, yesterday),
        ("inc-a2", "acct-a", detections_pb2.SEVERITY_CRITICAL, yesterday + timedelta(hours=1)),
        ("inc-a3x", "acct-a", detections_pb2.SEVERITY_LOW, yesterday + timedelta(hours=2)),
        ("inc-b1", "acct-b", detections_pb2.SEVERITY_MEDIUM, yesterday),
    ]:
        await producer.publish(INCIDENTS, incident(iid, acct, sev, at), key=iid)
    # a newer version of inc-a1 (resolved) and then the old one redelivered
    newer = incident("inc-a1", "acct-a", detections_pb2.SEVERITY_HIGH, yesterday, version=2)
    newer.status = incidents_pb2.INCIDENT_STATUS_RESOLVED
    await producer.publish(INCIDENTS, newer, key="inc-a1")
    await producer.publish(
        INCIDENTS,
        incident("inc-a1", "acct-a", detections_pb2.SEVERITY_HIGH, yesterday),
        key="inc-a1",
    )
    for daily, open_, at in [(True, 2, NOW - timedelta(hours=3)), (False, 3, NOW)]:
        count = incidents_pb2.IncidentCount(
            account_id="acct-a", open_incidents=open_, total_incidents=4, daily=daily
        )
        count.as_of.CopyFrom(to_timestamp(at))
        await producer.publish(INCIDENT_COUNTS, count, key="acct-a")
    for key, cleared in [("pc-1", False), ("pc-2", False), ("pc-2", True)]:
        nc = incidents_pb2.NonconformingEndpoint(
            account_id="acct-a",
            endpoint_key=key,
            endpoint=detections_pb2.Endpoint(host=key),
            threat_names=["WORM_X"],
            reason=incidents_pb2.NONCONFORMING_REASON_UNRESOLVED_THREAT,
            cleared=cleared,
        )
        nc.updated_at.CopyFrom(to_timestamp(NOW - timedelta(minutes=5 if not cleared else 1)))
        await producer.publish(NONCONFORMING_ENDPOINTS, nc, key=f"acct-a/{key}")


async def test_projections_and_customer_accounts_screen(
    reporter: tuple[ServiceProcess, Stub],
    producer: EventProducer,
    signer: TokenSigner,
    names: Any,
    infra: Infra,
) -> None:
    _, stub = reporter
    # an undecodable record goes to the dead-letter topic, the rest is applied
    await producer.send_raw(INCIDENTS.qualified(names.prefix), b"\x00garbage", key=b"x", headers=[])
    await publish_fixture(producer)
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)

    async def screen() -> list[Any]:
        rows = (
            await stub.ListCustomerAccounts(
                reporter_pb2.ListCustomerAccountsRequest(), metadata=operator
            )
        ).accounts
        a = [r for r in rows if r.account_id == "acct-a"]
        ready = (
            len(rows) == 2
            and a
            and a[0].incidents == 2
            and a[0].open_incidents_live == 3
            and a[0].nonconforming_endpoints == 1
            and a[0].product_count == 3
            and a[0].HasField("last_received")
        )
        return list(rows) if ready else []

    rows = await wait_until(screen, timeout=60)
    a, b = rows
    assert (a.name, a.company_name, a.managed_by) == ("Acme", "Acme Ltd", "admin@acme.example")
    assert list(a.services) == ["threat-discovery", "threat-mitigation"]
    assert a.security_compliance == reporter_pb2.SECURITY_COMPLIANCE_PARTIAL
    assert b.security_compliance == reporter_pb2.SECURITY_COMPLIANCE_ENABLED
    # last received is the latest finished upload (10 minutes ago), not the last one published
    assert a.last_received.ToDatetime(UTC) == NOW - timedelta(minutes=10)
    assert a.valid_from.ToDatetime(UTC) == NOW - timedelta(days=100)

    products = (
        await stub.ListProducts(
            reporter_pb2.ListProductsRequest(account_id="acct-a"), metadata=operator
        )
    ).products
    by_id = {p.product_id: p for p in products}
    assert by_id["tmi-a1"].liveness == incidents_pb2.PRODUCT_LIVENESS_STATE_OFFLINE
    assert by_id["tda-a2"].security_compliance_enabled is False
    assert not by_id["tmi-a1"].HasField("security_compliance_enabled")

    # the redelivered old version did not overwrite the resolved one
    got = (
        await stub.GetIncident(
            reporter_pb2.GetIncidentRequest(incident_id="inc-a1"), metadata=operator
        )
    ).incident
    assert got.version == 2 and got.status == incidents_pb2.INCIDENT_STATUS_RESOLVED
    assert [t.summary for t in got.timeline] == [f"SMB spread step {n}" for n in range(3)]
    assert list(got.recommended_actions) == ["Isolate the endpoint", "Reset credentials"]
    assert "attack.lateral_movement" in got.attack_tags

    async def with_cleared() -> list[Any]:
        # the screen's count (1) holds before pc-2's records are projected too: wait for them
        listed = await stub.ListNonconformingEndpoints(
            reporter_pb2.ListNonconformingEndpointsRequest(
                account_id="acct-a", include_cleared=True
            ),
            metadata=operator,
        )
        seen = {e.endpoint_key: e.cleared for e in listed.endpoints}
        return list(listed.endpoints) if seen.get("pc-2") else []

    cleared = {e.endpoint_key: e.cleared for e in await wait_until(with_cleared, timeout=30)}
    assert cleared == {"pc-1": False, "pc-2": True}
    endpoints = await stub.ListNonconformingEndpoints(
        reporter_pb2.ListNonconformingEndpointsRequest(account_id="acct-a"), metadata=operator
    )
    assert [e.endpoint_key for e in endpoints.endpoints] == ["pc-1"]  # pc-2 was cleared

    async with TopicReader(infra.kafka_bootstrap, INCIDENTS.dead_letter, names.prefix) as dlq:  # type: ignore[arg-type]
        records = await dlq.read_until(lambda rs: len(rs) >= 1)
    assert b"not an envelope" in dict(records[0].headers)[DLQ_REASON]


async def test_deleted_accounts_leave_the_screen_unless_asked_for_and_recipients_are_capped(
    reporter: tuple[ServiceProcess, Stub], producer: EventProducer, signer: TokenSigner
) -> None:
    """Seed 001: a deleted account is no longer a row of the Customer Accounts screen (its
    reports stay until log maintenance); a report has at most 50 recipients."""
    _, stub = reporter
    await publish_fixture(producer)
    await producer.publish(ACCOUNTS, account("acct-c", "Gone", deleted=True), key="acct-c")
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)

    async def with_deleted() -> list[Any]:
        rows = (
            await stub.ListCustomerAccounts(
                reporter_pb2.ListCustomerAccountsRequest(include_deleted=True), metadata=operator
            )
        ).accounts
        return list(rows) if len(rows) == 3 else []

    rows = await wait_until(with_deleted, timeout=60)
    assert [r.deleted for r in rows if r.account_id == "acct-c"] == [True]
    shown = (
        await stub.ListCustomerAccounts(
            reporter_pb2.ListCustomerAccountsRequest(), metadata=operator
        )
    ).accounts
    assert sorted(r.account_id for r in shown) == ["acct-a", "acct-b"]
    one = await stub.GetCustomerAccount(
        reporter_pb2.GetCustomerAccountRequest(account_id="acct-c"), metadata=operator
    )
    assert one.account.deleted

    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)
    for n in range(50):
        await stub.AddReportRecipient(
            reporter_pb2.AddReportRecipientRequest(email=f"r{n}@beta.example"), metadata=admin_b
        )
    extra = reporter_pb2.AddReportRecipientRequest(email="r50@beta.example")
    assert (
        await status_of(stub.AddReportRecipient, extra, admin_b)
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    again = reporter_pb2.AddReportRecipientRequest(email="R7@beta.example")  # already there
    listed = (await stub.AddReportRecipient(again, metadata=admin_b)).recipients
    assert len(listed) == 50 and "r50@beta.example" not in listed


async def test_incident_filters_and_keyset_pages(
    reporter: tuple[ServiceProcess, Stub], producer: EventProducer, signer: TokenSigner
) -> None:
    _, stub = reporter
    await producer.publish(ACCOUNTS, account("acct-a", "Acme"), key="acct-a")
    base = NOW - timedelta(hours=10)
    for n in range(7):
        sev = detections_pb2.SEVERITY_HIGH if n % 2 else detections_pb2.SEVERITY_LOW
        await producer.publish(
            INCIDENTS,
            incident(f"inc-{n}", "acct-a", sev, base + timedelta(hours=n)),
            key=f"inc-{n}",
        )
    admin = token(signer, "acct-a", Role.ACCOUNT_ADMINISTRATOR)

    await incidents_projected(stub, admin, 7)
    seen: list[str] = []
    page = ""
    while True:
        r = await stub.ListIncidents(
            reporter_pb2.ListIncidentsRequest(page_size=3, page_token=page), metadata=admin
        )
        seen += [i.incident_id for i in r.incidents]
        page = r.next_page_token
        if not page:
            break
    assert seen == [f"inc-{n}" for n in range(6, -1, -1)]
    high = await stub.ListIncidents(
        reporter_pb2.ListIncidentsRequest(min_severity=detections_pb2.SEVERITY_HIGH), metadata=admin
    )
    assert [i.incident_id for i in high.incidents] == ["inc-5", "inc-3", "inc-1"]
    window = reporter_pb2.ListIncidentsRequest()
    window.since.CopyFrom(to_timestamp(base + timedelta(hours=2)))
    window.until.CopyFrom(to_timestamp(base + timedelta(hours=4)))
    r = await stub.ListIncidents(window, metadata=admin)
    assert [i.incident_id for i in r.incidents] == ["inc-3", "inc-2"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListIncidents(
            reporter_pb2.ListIncidentsRequest(page_token="bogus"), metadata=admin
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tenant_isolation_and_roles_over_grpc(
    reporter: tuple[ServiceProcess, Stub],
    producer: EventProducer,
    signer: TokenSigner,
    infra: Infra,
    names: Any,
) -> None:
    _, stub = reporter
    await publish_fixture(producer)
    admin_a = token(signer, "acct-a", Role.ACCOUNT_ADMINISTRATOR)
    analyst_a = token(signer, "acct-a", Role.ANALYST)
    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)

    await incidents_projected(stub, operator, 4)
    # customers see their own account only, whatever they ask for
    rows = (
        await stub.ListCustomerAccounts(
            reporter_pb2.ListCustomerAccountsRequest(), metadata=admin_b
        )
    ).accounts
    assert [r.account_id for r in rows] == ["acct-b"]
    mine = (
        await stub.ListIncidents(reporter_pb2.ListIncidentsRequest(), metadata=analyst_a)
    ).incidents
    assert {i.account_id for i in mine} == {"acct-a"} and len(mine) == 3

    nf = grpc.StatusCode.NOT_FOUND
    assert (
        await status_of(
            stub.GetIncident, reporter_pb2.GetIncidentRequest(incident_id="inc-a1"), admin_b
        )
        == nf
    )
    assert (
        await status_of(
            stub.GetIncident,
            reporter_pb2.GetIncidentRequest(account_id="acct-a", incident_id="inc-a1"),
            admin_b,
        )
        == nf
    )
    assert (
        await status_of(
            stub.GetCustomerAccount,
            reporter_pb2.GetCustomerAccountRequest(account_id="acct-a"),
            admin_b,
        )
        == nf
    )
    assert (
        await status_of(
            stub.ListProducts, reporter_pb2.ListProductsRequest(account_id="acct-a"), admin_b
        )
        == nf
    )
    assert (
        await status_of(
            stub.ListNonconformingEndpoints,
            reporter_pb2.ListNonconformingEndpointsRequest(account_id="acct-a"),
            admin_b,
        )
        == nf
    )
    assert (
        await status_of(
            stub.ListReportRecipients,
            reporter_pb2.ListReportRecipientsRequest(account_id="acct-a"),
            admin_b,
        )
        == nf
    )
    since = to_timestamp(NOW - timedelta(days=3))
    until = to_timestamp(NOW)
    assert (
        await status_of(
            stub.DownloadConsolidatedLogs,
            reporter_pb2.DownloadConsolidatedLogsRequest(
                account_id="acct-a", since=since, until=until
            ),
            admin_b,
        )
        == nf
    )

    # analysts read, never write
    pd = grpc.StatusCode.PERMISSION_DENIED
    add = reporter_pb2.AddReportRecipientRequest(email="soc@acme.example")
    assert await status_of(stub.AddReportRecipient, add, analyst_a) == pd
    gen = reporter_pb2.GenerateReportRequest(kind=reporter_pb2.REPORT_KIND_DAILY_ADMINISTRATIVE)
    assert await status_of(stub.GenerateReport, gen, analyst_a) == pd
    assert (
        await status_of(stub.SetReportSchedule, reporter_pb2.SetReportScheduleRequest(), analyst_a)
        == pd
    )
    assert list((await stub.AddReportRecipient(add, metadata=admin_a)).recipients) == [
        "soc@acme.example"
    ]
    assert list(
        (
            await stub.ListReportRecipients(
                reporter_pb2.ListReportRecipientsRequest(), metadata=analyst_a
            )
        ).recipients
    ) == ["soc@acme.example"]
    bad = reporter_pb2.AddReportRecipientRequest(email="soc@acme.example\r\nBcc: x@evil.example")
    assert (
        await status_of(stub.AddReportRecipient, bad, admin_a) == grpc.StatusCode.INVALID_ARGUMENT
    )

    # the report schedule: validated time zone, defaults until changed
    schedule = (
        await stub.GetReportSchedule(reporter_pb2.GetReportScheduleRequest(), metadata=analyst_a)
    ).schedule
    assert schedule.daily_administrative and schedule.account_id == "acct-a"
    wanted = reporter_pb2.ReportSchedule(weekly_executive=True, time_zone="Mars/Olympus")
    set_bad = reporter_pb2.SetReportScheduleRequest(schedule=wanted)
    assert (
        await status_of(stub.SetReportSchedule, set_bad, admin_a)
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    wanted.time_zone = "Asia/Tokyo"
    await stub.SetReportSchedule(
        reporter_pb2.SetReportScheduleRequest(schedule=wanted), metadata=admin_a
    )
    schedule = (
        await stub.GetReportSchedule(reporter_pb2.GetReportScheduleRequest(), metadata=admin_a)
    ).schedule
    assert (schedule.daily_administrative, schedule.weekly_executive) == (False, True)
    assert schedule.time_zone == "Asia/Tokyo"

    # no token, a bad token
    assert (
        await status_of(stub.ListIncidents, reporter_pb2.ListIncidentsRequest(), ())
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await status_of(
            stub.DownloadReport, reporter_pb2.DownloadReportRequest(report_id="x"), bearer("nope")
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )

    # mitigation tasks: operators only, published before the answer
    task = reporter_pb2.CreateMitigationTaskRequest(
        account_id="acct-a",
        product_id="tmi-a1",
        kind=status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN,
        parameters={"pattern_name": "worm-x-cleanup"},
    )
    assert await status_of(stub.CreateMitigationTask, task, admin_a) == pd
    await stub.PutCleanupPattern(
        reporter_pb2.PutCleanupPatternRequest(
            account_id="acct-a", name="worm-x-cleanup", content=b"delete_file: worm.exe\n"
        ),
        metadata=operator,
    )
    no_pattern = reporter_pb2.CreateMitigationTaskRequest()
    no_pattern.CopyFrom(task)
    del no_pattern.parameters["pattern_name"]
    assert (
        await status_of(stub.CreateMitigationTask, no_pattern, operator)
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    foreign = reporter_pb2.CreateMitigationTaskRequest()
    foreign.CopyFrom(task)
    foreign.account_id = "acct-b"
    assert await status_of(stub.CreateMitigationTask, foreign, operator) == nf
    created = (await stub.CreateMitigationTask(task, metadata=operator)).task
    async with TopicReader(infra.kafka_bootstrap, MITIGATION_TASKS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 1, timeout=10)
    env, on_bus = unwrap(records[0].value, status_pb2.MitigationTask)
    assert on_bus.task_id == created.task_id and on_bus.product_id == "tmi-a1"
    assert records[0].key == b"tmi-a1" and env.account_id == "acct-a"
    assert on_bus.created_by_user_id == "u-provider-provider_operator"

    # the account's tasks: pending until the product acknowledges them in a heartbeat
    listing = reporter_pb2.ListMitigationTasksRequest(product_id="tmi-a1")

    async def task_states() -> list[reporter_pb2.MitigationTaskState]:
        got = await stub.ListMitigationTasks(listing, metadata=analyst_a)
        return list(got.tasks)

    (pending,) = await wait_until(task_states, timeout=20)
    assert pending.task.task_id == created.task_id and not pending.HasField("acknowledged_at")
    assert pending.task.parameters["pattern_name"] == "worm-x-cleanup"
    other = reporter_pb2.ListMitigationTasksRequest(account_id="acct-a")
    assert await status_of(stub.ListMitigationTasks, other, admin_b) == nf
    # another product acknowledging this task id (an hour earlier) changes nothing: the
    # first acknowledgement's time is kept, and it is its own product's
    for product_id, at in (("tda-b1", NOW - timedelta(hours=1)), ("tmi-a1", NOW)):
        beat = status_pb2.Heartbeat(
            product_id=product_id,
            account_id="acct-a" if product_id == "tmi-a1" else "acct-b",
            acknowledged_task_ids=[created.task_id],
        )
        beat.received_at.CopyFrom(to_timestamp(at))
        await producer.publish(HEARTBEATS, beat, key=product_id)

    async def acknowledged() -> reporter_pb2.MitigationTaskState | None:
        states = await task_states()
        return states[0] if len(states) == 1 and states[0].HasField("acknowledged_at") else None

    done = await wait_until(acknowledged, timeout=20)
    assert done.acknowledged_at.ToDatetime(tzinfo=UTC) == NOW

    # log maintenance: everyone reads, only operators change it
    lm = reporter_pb2.SetLogMaintenanceRequest(
        log_maintenance=reporter_pb2.LogMaintenance(report_retention_days=30, log_retention_days=7)
    )
    assert await status_of(stub.SetLogMaintenance, lm, admin_a) == pd
    stored = (await stub.SetLogMaintenance(lm, metadata=operator)).log_maintenance
    assert stored.report_retention_days == 30
    read = (
        await stub.GetLogMaintenance(reporter_pb2.GetLogMaintenanceRequest(), metadata=analyst_a)
    ).log_maintenance
    assert read.log_retention_days == 7
    # published for the correlator: the defaults at start-up, then the operator's change
    async with TopicReader(infra.kafka_bootstrap, LOG_MAINTENANCE, names.prefix) as reader:
        published = await reader.read_events(maintenance_pb2.LogMaintenanceSettings, 2)
    assert [(m.log_retention_days, m.HasField("updated_at")) for m in published] == [
        (180, False),
        (7, True),
    ]
    assert published[1].report_retention_days == 30
    assert published[1].updated_at.ToDatetime(tzinfo=UTC) == stored.updated_at.ToDatetime(
        tzinfo=UTC
    )


async def test_analyst_sets_an_incident_status_published_for_the_correlator(
    reporter: tuple[ServiceProcess, Stub],
    producer: EventProducer,
    signer: TokenSigner,
    infra: Infra,
    names: Any,
) -> None:
    """An analyst's triage decision is on incident-status-changes (key: the incident id) as
    answered, with the stored incident's group key and the analyst as its author;
    another tenant, a bad status or note and an incident without a group key are refused and
    publish nothing."""
    proc, stub = reporter
    at = NOW - timedelta(hours=2)
    triaged = incident("inc-t1", "acct-a", detections_pb2.SEVERITY_HIGH, at)
    triaged.group_key = "acct-a|rule-worm|pc-inc-t1"
    foreign = incident("inc-tb", "acct-b", detections_pb2.SEVERITY_HIGH, at)
    foreign.group_key = "acct-b|rule-worm|pc-inc-tb"
    before_triage = incident("inc-t0", "acct-a", detections_pb2.SEVERITY_LOW, at)
    for inc in (triaged, foreign, before_triage):
        await producer.publish(INCIDENTS, inc, key=inc.incident_id, account_id=inc.account_id)
    analyst_a = token(signer, "acct-a", Role.ANALYST)
    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)
    await incidents_projected(stub, operator, 3)

    resolved = incidents_pb2.INCIDENT_STATUS_RESOLVED
    pb = reporter_pb2
    nf, bad = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    set_status = stub.SetIncidentStatus
    to_a1 = pb.SetIncidentStatusRequest(incident_id="inc-t1", status=resolved)
    assert await status_of(set_status, to_a1, admin_b) == nf
    a1_in_a = pb.SetIncidentStatusRequest(
        account_id="acct-a", incident_id="inc-t1", status=resolved
    )
    assert await status_of(set_status, a1_in_a, admin_b) == nf
    to_b = pb.SetIncidentStatusRequest(incident_id="inc-tb", status=resolved)
    assert await status_of(set_status, to_b, analyst_a) == nf
    unset = pb.SetIncidentStatusRequest(incident_id="inc-t1")
    assert await status_of(set_status, unset, analyst_a) == bad
    control = pb.SetIncidentStatusRequest(incident_id="inc-t1", status=resolved, note="a\x1bb")
    assert await status_of(set_status, control, analyst_a) == bad
    assert await status_of(set_status, to_a1, operator) == bad  # operators name the account
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_status(
            pb.SetIncidentStatusRequest(incident_id="inc-t0", status=resolved), metadata=analyst_a
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "before triage existed" in (err.value.details() or "")

    note = "Re-imaged pc-inc-t1.\n\tNo further spread."
    request = pb.SetIncidentStatusRequest(incident_id="inc-t1", status=resolved, note=f" {note} \n")
    change = (await set_status(request, metadata=analyst_a)).change
    assert change.change_id.startswith("chg-")
    assert (change.incident_id, change.account_id, change.group_key) == (
        "inc-t1",
        "acct-a",
        "acct-a|rule-worm|pc-inc-t1",
    )
    assert change.status == resolved and change.note == note
    assert change.changed_by_user_id == "u-acct-a-analyst"
    assert abs(change.requested_at.ToDatetime(UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    reopened = (
        await set_status(
            pb.SetIncidentStatusRequest(
                account_id="acct-a",
                incident_id="inc-t1",
                status=incidents_pb2.INCIDENT_STATUS_INVESTIGATING,
            ),
            metadata=operator,
        )
    ).change

    async with TopicReader(infra.kafka_bootstrap, INCIDENT_STATUS_CHANGES, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 2, timeout=15)
    decoded = [unwrap(r.value, incidents_pb2.IncidentStatusChange) for r in records]
    assert [c.change_id for _, c in decoded] == [change.change_id, reopened.change_id]
    env, on_bus = decoded[0]
    assert on_bus == change  # every field as answered
    assert records[0].key == b"inc-t1" and records[1].key == b"inc-t1"
    assert env.account_id == "acct-a" and env.event_id == change.change_id
    assert decoded[1][1].changed_by_user_id == "u-provider-provider_operator"
    # one lean line per change: the note's length, never its text
    assert proc.logs.count("incident status change published") == 2
    assert "note_length" in proc.logs and "Re-imaged" not in proc.logged_content


async def test_report_generated_stored_downloaded_and_notified(
    reporter: tuple[ServiceProcess, Stub],
    producer: EventProducer,
    signer: TokenSigner,
    infra: Infra,
    names: Any,
) -> None:
    _, stub = reporter
    await publish_fixture(producer)
    admin_a = token(signer, "acct-a", Role.ACCOUNT_ADMINISTRATOR)
    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)

    await incidents_projected(stub, admin_a, 3)
    await stub.AddReportRecipient(
        reporter_pb2.AddReportRecipientRequest(email="CISO@Acme.example"), metadata=admin_a
    )
    request = reporter_pb2.GenerateReportRequest(
        kind=reporter_pb2.REPORT_KIND_ON_DEMAND, notify=True
    )
    request.period_start.CopyFrom(to_timestamp(NOW - timedelta(days=2)))
    request.period_end.CopyFrom(to_timestamp(NOW))
    first = await stub.GenerateReport(request, metadata=admin_a)
    assert first.created and first.report.state == reporter_pb2.REPORT_STATE_READY
    again = await stub.GenerateReport(request, metadata=admin_a)
    assert not again.created and again.report.report_id == first.report.report_id

    chunks = [
        m
        async for m in stub.DownloadReport(
            reporter_pb2.DownloadReportRequest(report_id=first.report.report_id), metadata=admin_a
        )
    ]
    pdf = b"".join(m.chunk for m in chunks)
    assert chunks[0].report.sha256 == first.report.sha256 and len(pdf) == first.report.size_bytes
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "On-demand report: Acme" in text
    assert "Worm outbreak inc-a2" in text and "Critical" in text
    assert "Lateral Movement" in text and "Isolate the endpoint" in text
    assert "inc-b1" not in text

    listed = await stub.ListReports(reporter_pb2.ListReportsRequest(), metadata=admin_a)
    assert [r.report_id for r in listed.reports] == [first.report.report_id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.DownloadReport(
            reporter_pb2.DownloadReportRequest(report_id=first.report.report_id), metadata=admin_b
        ):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    async with TopicReader(infra.kafka_bootstrap, NOTIFICATION_REQUESTS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 1, timeout=15)
    _, note = unwrap(records[0].value, notifications_pb2.NotificationRequest)
    assert note.kind == notifications_pb2.NOTIFICATION_KIND_REPORT_READY
    assert note.notification_id == f"report-ready-{first.report.report_id}"
    assert list(note.recipients) == ["ciso@acme.example"]
    assert note.attachments[0].content == pdf
    assert note.attachments[0].content_type == "application/pdf"
    assert len(records) == 1  # the second GenerateReport did not notify again

    # consolidated logs: every step of every incident, formulas neutralised
    logs = reporter_pb2.DownloadConsolidatedLogsRequest()
    logs.since.CopyFrom(to_timestamp(NOW - timedelta(days=2)))
    logs.until.CopyFrom(to_timestamp(NOW))
    csv_bytes = b"".join(
        [m.chunk async for m in stub.DownloadConsolidatedLogs(logs, metadata=admin_a)]
    )
    lines = csv_bytes.decode().splitlines()
    assert lines[0].startswith("incident_id,title,severity")
    assert len(lines) == 1 + 3 * 3
    assert any(",'=cmd" in line for line in lines)


def _every_rpc(account_id: str) -> dict[str, Any]:
    """One request per ReporterService method, naming ``account_id`` where it takes one."""
    since, until = to_timestamp(NOW - timedelta(days=3)), to_timestamp(NOW - timedelta(hours=1))
    pb = reporter_pb2
    return {
        "ListCustomerAccounts": pb.ListCustomerAccountsRequest(account_id=account_id),
        "GetCustomerAccount": pb.GetCustomerAccountRequest(account_id=account_id),
        "ListIncidents": pb.ListIncidentsRequest(account_id=account_id),
        "GetIncident": pb.GetIncidentRequest(account_id=account_id, incident_id="inc-a1"),
        "SetIncidentStatus": pb.SetIncidentStatusRequest(
            account_id=account_id,
            incident_id="inc-a1",
            status=incidents_pb2.INCIDENT_STATUS_INVESTIGATING,
        ),
        "ListNonconformingEndpoints": pb.ListNonconformingEndpointsRequest(account_id=account_id),
        "ListProducts": pb.ListProductsRequest(account_id=account_id),
        "GenerateReport": pb.GenerateReportRequest(
            account_id=account_id,
            kind=pb.REPORT_KIND_ON_DEMAND,
            period_start=since,
            period_end=until,
        ),
        "ListReports": pb.ListReportsRequest(account_id=account_id),
        "DownloadReport": pb.DownloadReportRequest(account_id=account_id, report_id="r"),
        "ListReportRecipients": pb.ListReportRecipientsRequest(account_id=account_id),
        "AddReportRecipient": pb.AddReportRecipientRequest(
            account_id=account_id, email="x@acme.example"
        ),
        "RemoveReportRecipient": pb.RemoveReportRecipientRequest(
            account_id=account_id, email="x@acme.example"
        ),
        "GetReportSchedule": pb.GetReportScheduleRequest(account_id=account_id),
        "SetReportSchedule": pb.SetReportScheduleRequest(
            schedule=pb.ReportSchedule(account_id=account_id)
        ),
        "DownloadConsolidatedLogs": pb.DownloadConsolidatedLogsRequest(
            account_id=account_id, since=since, until=until
        ),
        "CreateMitigationTask": pb.CreateMitigationTaskRequest(
            account_id=account_id,
            product_id="tmi-a1",
            kind=status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
        ),
        "ListMitigationTasks": pb.ListMitigationTasksRequest(account_id=account_id),
        "PutCleanupPattern": pb.PutCleanupPatternRequest(
            account_id=account_id, name="p", content=b"x"
        ),
        "ListCleanupPatterns": pb.ListCleanupPatternsRequest(account_id=account_id),
        "DeleteCleanupPattern": pb.DeleteCleanupPatternRequest(account_id=account_id, name="p"),
        "ListForensicData": pb.ListForensicDataRequest(account_id=account_id),
        "DownloadForensicData": pb.DownloadForensicDataRequest(
            account_id=account_id, upload_id="up"
        ),
        "GetLogMaintenance": pb.GetLogMaintenanceRequest(),
        "SetLogMaintenance": pb.SetLogMaintenanceRequest(
            log_maintenance=pb.LogMaintenance(report_retention_days=9, log_retention_days=9)
        ),
    }


async def test_every_rpc_scoped_for_another_tenant_and_for_analysts(
    reporter: tuple[ServiceProcess, Stub], producer: EventProducer, signer: TokenSigner
) -> None:
    """Every method: another tenant's account is NOT_FOUND (before any role check, so nothing
    is revealed), an analyst's write is PERMISSION_DENIED, and nothing was changed."""
    _, stub = reporter
    await publish_fixture(producer)
    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)
    analyst_a = token(signer, "acct-a", Role.ANALYST)
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)

    await incidents_projected(stub, operator, 4)
    requests = _every_rpc("acct-a")
    assert set(requests) == set(POLICY)
    for method, request in requests.items():
        access = POLICY[method]
        got = await status_of(getattr(stub, method), request, admin_b)
        if access.account_field is not None:
            assert got == grpc.StatusCode.NOT_FOUND, method
        elif access.operator_only:
            assert got == grpc.StatusCode.PERMISSION_DENIED, method
        if access.write:
            own = _every_rpc("")[method]
            assert (
                await status_of(getattr(stub, method), own, analyst_a)
                == grpc.StatusCode.PERMISSION_DENIED
            )
    recipients = await stub.ListReportRecipients(
        reporter_pb2.ListReportRecipientsRequest(account_id="acct-a"), metadata=operator
    )
    assert list(recipients.recipients) == []
    reports = await stub.ListReports(
        reporter_pb2.ListReportsRequest(account_id="acct-a"), metadata=operator
    )
    assert list(reports.reports) == []
    patterns = await stub.ListCleanupPatterns(
        reporter_pb2.ListCleanupPatternsRequest(account_id="acct-a"), metadata=operator
    )
    assert list(patterns.patterns) == []


# --- the cleanup pattern catalogue and forensic data ---------------------------------------

PD = grpc.StatusCode.PERMISSION_DENIED
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
IA = grpc.StatusCode.INVALID_ARGUMENT
pb = reporter_pb2


async def publish_accounts(producer: EventProducer) -> None:
    """acct-a with a Threat Mitigator, acct-b with a discovery appliance."""
    await producer.publish(ACCOUNTS, account("acct-a", "Acme"), key="acct-a")
    await producer.publish(ACCOUNTS, account("acct-b", "Beta"), key="acct-b")
    for pid, account_id, kind in (("tmi-a1", "acct-a", TMI), ("tda-b1", "acct-b", TDA)):
        await producer.publish(PRODUCTS, product(pid, account_id, kind, pid), key=pid)


@dataclass(frozen=True)
class Portal:
    """The running reporter with acct-a and acct-b published, and its callers' metadata."""

    proc: ServiceProcess
    stub: Stub
    operator: Any
    admin_a: Any
    analyst_a: Any
    admin_b: Any


@pytest.fixture
async def portal(
    reporter: tuple[ServiceProcess, Stub], producer: EventProducer, signer: TokenSigner
) -> Portal:
    await publish_accounts(producer)
    return Portal(
        *reporter,
        operator=token(signer, "provider", Role.PROVIDER_OPERATOR),
        admin_a=token(signer, "acct-a", Role.ACCOUNT_ADMINISTRATOR),
        analyst_a=token(signer, "acct-a", Role.ANALYST),
        admin_b=token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR),
    )


async def until_known(call: Any, request: Any, metadata: Any) -> Any:
    """``call`` again while the reporter has not projected the account or product yet."""

    async def attempt() -> Any:
        try:
            return await call(request, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() not in (NF, FP):
                raise
            return None

    return await wait_until(attempt, timeout=60, interval=0.3)


def put(name: str, content: bytes, *, expected: int | None = None, **kw: Any) -> Any:
    request = pb.PutCleanupPatternRequest(name=name, content=content, **kw)
    if expected is not None:
        request.expected_version = expected
    return request


async def test_cleanup_pattern_catalogue_over_grpc(
    portal: Portal, infra: Infra, names: Any
) -> None:
    p = portal
    proc, stub, operator = p.proc, p.stub, p.operator
    admin_a, analyst_a, admin_b = p.admin_a, p.analyst_a, p.admin_b
    first = os.urandom(MAX_PATTERN_BYTES)  # the largest pattern travels inline on the topic
    second = b"kill_process: svch0st.exe\ndelete_file: C:\\Users\\Public\\svch0st.exe\n"

    # operators only: the customer's administrator and analyst may not put one
    request = put("emotet-cleanup", first, expected=0, account_id="acct-a", description="v1")
    assert await status_of(stub.PutCleanupPattern, request, admin_a) == PD
    assert await status_of(stub.PutCleanupPattern, request, analyst_a) == PD
    created = (await until_known(stub.PutCleanupPattern, request, operator)).pattern
    assert (created.account_id, created.name, created.version) == ("acct-a", "emotet-cleanup", 1)
    assert created.content_sha256 == hashlib.sha256(first).hexdigest()
    assert created.size == MAX_PATTERN_BYTES
    assert created.updated_by_user_id == "u-provider-provider_operator"
    # the same put again (a retry) changes nothing; "only if absent" with other content fails
    again = (await stub.PutCleanupPattern(request, metadata=operator)).pattern
    assert again == created
    changed = put("emotet-cleanup", second, expected=0, account_id="acct-a", description="v2")
    assert await status_of(stub.PutCleanupPattern, changed, operator) == FP
    changed.expected_version = 1
    replaced = (await stub.PutCleanupPattern(changed, metadata=operator)).pattern
    assert replaced.version == 2 and replaced.content_sha256 == hashlib.sha256(second).hexdigest()
    for bad in (
        put("emotet-cleanup", first + b"x", account_id="acct-a"),
        put("../etc/passwd", second, account_id="acct-a"),
        put("emotet-cleanup", b"", account_id="acct-a"),
        put("emotet-cleanup", second, account_id="acct-a", description="bell\x07"),
    ):
        assert await status_of(stub.PutCleanupPattern, bad, operator) == IA
    unknown = put("emotet-cleanup", second, account_id="acct-unknown")
    assert await status_of(stub.PutCleanupPattern, unknown, operator) == NF

    # listed to the account's own users (without content); another tenant sees NOT_FOUND
    own = await stub.ListCleanupPatterns(pb.ListCleanupPatternsRequest(), metadata=analyst_a)
    assert [(p.name, p.version, p.description) for p in own.patterns] == [
        ("emotet-cleanup", 2, "v2")
    ]
    foreign = pb.ListCleanupPatternsRequest(account_id="acct-a")
    assert await status_of(stub.ListCleanupPatterns, foreign, admin_b) == NF
    theirs = await stub.ListCleanupPatterns(pb.ListCleanupPatternsRequest(), metadata=admin_b)
    assert list(theirs.patterns) == []

    # a custom cleanup task names a pattern of the catalogue and carries its SHA-256
    task = pb.CreateMitigationTaskRequest(
        account_id="acct-a",
        product_id="tmi-a1",
        kind=status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN,
        parameters={"pattern_name": "no-such-pattern"},
    )
    assert await status_of(stub.CreateMitigationTask, task, operator) == FP
    task.parameters["pattern_name"] = "emotet-cleanup"
    issued = (await until_known(stub.CreateMitigationTask, task, operator)).task
    assert issued.parameters["pattern_sha256"] == replaced.content_sha256
    assert issued.parameters["pattern_version"] == "2"

    # removal: operators only, a tombstone on the topic, then gone
    removal = pb.DeleteCleanupPatternRequest(account_id="acct-a", name="emotet-cleanup")
    assert await status_of(stub.DeleteCleanupPattern, removal, admin_a) == PD
    await stub.DeleteCleanupPattern(removal, metadata=operator)
    assert await status_of(stub.DeleteCleanupPattern, removal, operator) == NF
    listed = await stub.ListCleanupPatterns(foreign, metadata=operator)
    assert list(listed.patterns) == []
    assert await status_of(stub.CreateMitigationTask, task, operator) == FP

    async with TopicReader(infra.kafka_bootstrap, CLEANUP_PATTERNS, names.prefix) as reader:
        records = await reader.read_until(lambda rs: len(rs) >= 4)
    assert {r.key for r in records} == {b"acct-a/emotet-cleanup"}
    events = [unwrap(r.value, status_pb2.CleanupPattern) for r in records]
    assert [(e.account_id, p.version, p.deleted) for e, p in events] == [
        ("acct-a", 1, False),
        ("acct-a", 1, False),
        ("acct-a", 2, False),
        ("acct-a", 3, True),
    ]
    v1, v2, tombstone = events[0][1], events[2][1], events[3][1]
    assert v1.content == first and hashlib.sha256(v1.content).hexdigest() == v1.content_sha256
    assert (v2.content, v2.description, v2.size) == (second, "v2", len(second))
    assert (tombstone.content, tombstone.content_sha256, tombstone.name) == (
        b"",
        "",
        "emotet-cleanup",
    )
    async with TopicReader(infra.kafka_bootstrap, MITIGATION_TASKS, names.prefix) as reader:
        (on_bus,) = await reader.read_events(status_pb2.MitigationTask, 1)
    assert on_bus.parameters["pattern_sha256"] == replaced.content_sha256
    assert "svch0st" not in proc.logged_content  # no pattern content in the logs


def chunks_of(
    content: bytes, *, task_id: str, product_id: str, file_name: str, sha256: str = ""
) -> list[status_pb2.ForensicDataChunk]:
    """A file cut as the ingest gateway cuts it (upload id from task, product, name, hash)."""
    digest = sha256 or hashlib.sha256(content).hexdigest()
    source = f"{task_id}/{product_id}/{file_name}/{digest}".encode()
    upload_id = "fd-" + hashlib.sha256(source).hexdigest()[:32]
    pieces = [content[i : i + MAX_CHUNK_BYTES] for i in range(0, len(content), MAX_CHUNK_BYTES)]
    out = []
    for index, data in enumerate(pieces or [b""]):
        chunk = status_pb2.ForensicDataChunk(
            upload_id=upload_id,
            task_id=task_id,
            account_id="acct-a",
            product_id=product_id,
            file_name=file_name,
            content_sha256=digest,
            size=len(content),
            index=index,
            count=max(len(pieces), 1),
            data=data,
            protocol=products_pb2.UPLOAD_PROTOCOL_SSH,
        )
        chunk.received_at.CopyFrom(to_timestamp(NOW))
        out.append(chunk)
    return out


async def send(producer: EventProducer, chunk: status_pb2.ForensicDataChunk) -> None:
    await producer.publish(FORENSIC_DATA, chunk, key=chunk.upload_id, account_id=chunk.account_id)


async def test_forensic_data_verified_listed_and_downloaded_by_operators_only(
    portal: Portal, producer: EventProducer, infra: Infra, names: Any
) -> None:
    p = portal
    proc, stub, operator = p.proc, p.stub, p.operator
    admin_a, analyst_a, admin_b = p.admin_a, p.analyst_a, p.admin_b
    request = pb.CreateMitigationTaskRequest(
        account_id="acct-a",
        product_id="tmi-a1",
        kind=status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
        parameters={"endpoint": "pc-7"},
    )
    task_id = (await until_known(stub.CreateMitigationTask, request, operator)).task.task_id

    async def beta_product_known() -> bool:
        got = await stub.ListProducts(pb.ListProductsRequest(), metadata=admin_b)
        return [p.product_id for p in got.products] == ["tda-b1"]

    await wait_until(beta_product_known, timeout=60)

    bundle = os.urandom(600 * 1024)
    good = chunks_of(bundle, task_id=task_id, product_id="tmi-a1", file_name="pc-7.tar.gz")
    assert len(good) == 3
    bad_sha = hashlib.sha256(b"something else").hexdigest()
    corrupt = chunks_of(
        os.urandom(300 * 1024),
        task_id=task_id,
        product_id="tmi-a1",
        file_name="pc-7-memory.bin",
        sha256=bad_sha,
    )
    # out of order, with a duplicate; the corrupt file interleaved
    for chunk in (good[2], corrupt[1], good[0], good[2], corrupt[0], good[1]):
        await send(producer, chunk)
    # invalid chunks: past the end, another account's product, disagreeing metadata
    past_end = status_pb2.ForensicDataChunk()
    past_end.CopyFrom(good[0])
    past_end.upload_id, past_end.index = "fd-past-end", 3
    foreign_product = chunks_of(b"x", task_id=task_id, product_id="tda-b1", file_name="b.txt")[0]
    disagreeing = status_pb2.ForensicDataChunk()
    disagreeing.CopyFrom(good[1])
    disagreeing.size = 1
    for chunk in (past_end, foreign_product, disagreeing):
        await send(producer, chunk)

    listing = pb.ListForensicDataRequest(account_id="acct-a")

    async def stored() -> list[pb.ForensicData]:
        files = (await stub.ListForensicData(listing, metadata=operator)).files
        done = {f.upload_id for f in files if f.complete}
        return list(files) if len(files) == 2 and good[0].upload_id in done else []

    files = {f.upload_id: f for f in await wait_until(stored, timeout=60)}
    mine = files[good[0].upload_id]
    assert (mine.task_id, mine.product_id, mine.file_name) == (task_id, "tmi-a1", "pc-7.tar.gz")
    assert (mine.size, mine.content_sha256) == (len(bundle), hashlib.sha256(bundle).hexdigest())
    assert mine.received_at.ToDatetime(tzinfo=UTC) == NOW
    assert files[corrupt[0].upload_id].complete is False

    # the account's users see the list; another tenant does not
    own = await stub.ListForensicData(pb.ListForensicDataRequest(), metadata=analyst_a)
    assert {f.upload_id for f in own.files} == set(files)
    assert await status_of(stub.ListForensicData, listing, admin_b) == NF
    theirs = await stub.ListForensicData(pb.ListForensicDataRequest(), metadata=admin_b)
    assert list(theirs.files) == []
    other_task = pb.ListForensicDataRequest(account_id="acct-a", task_id="task-other")
    assert list((await stub.ListForensicData(other_task, metadata=operator)).files) == []
    page = await stub.ListForensicData(
        pb.ListForensicDataRequest(account_id="acct-a", page_size=1), metadata=operator
    )
    rest = await stub.ListForensicData(
        pb.ListForensicDataRequest(
            account_id="acct-a", page_size=1, page_token=page.next_page_token
        ),
        metadata=operator,
    )
    assert {page.files[0].upload_id, rest.files[0].upload_id} == set(files)

    # operators download it byte for byte; the first piece carries the description
    download = pb.DownloadForensicDataRequest(account_id="acct-a", upload_id=mine.upload_id)
    pieces = [m async for m in stub.DownloadForensicData(download, metadata=operator)]
    assert b"".join(m.chunk for m in pieces) == bundle
    assert pieces[0].file == mine and not any(m.HasField("file") for m in pieces[1:])
    assert await status_of(stub.DownloadForensicData, download, analyst_a) == PD
    assert await status_of(stub.DownloadForensicData, download, admin_a) == PD
    assert await status_of(stub.DownloadForensicData, download, admin_b) == NF
    elsewhere = pb.DownloadForensicDataRequest(account_id="acct-b", upload_id=mine.upload_id)
    assert await status_of(stub.DownloadForensicData, elsewhere, operator) == NF
    condemned = pb.DownloadForensicDataRequest(account_id="acct-a", upload_id=corrupt[0].upload_id)
    assert await status_of(stub.DownloadForensicData, condemned, operator) == FP

    # the task lists the complete file it was answered with
    async def task_states() -> list[pb.MitigationTaskState]:
        got = await stub.ListMitigationTasks(pb.ListMitigationTasksRequest(), metadata=analyst_a)
        return list(got.tasks)

    (state,) = await wait_until(task_states, timeout=30)
    assert state.task.task_id == task_id and list(state.forensic_upload_ids) == [mine.upload_id]

    async with TopicReader(
        infra.kafka_bootstrap,
        FORENSIC_DATA.dead_letter,  # type: ignore[arg-type]
        names.prefix,
    ) as dlq:
        records = await dlq.read_until(lambda rs: len(rs) >= 3)
    reasons = [dict(r.headers)[DLQ_REASON].decode() for r in records]
    assert sorted(reasons) == [
        "invalid: index 3 of 3 chunks",
        "invalid: size disagree with earlier chunks",
        "invalid: the product is not of the account",
    ]
    assert "forensic data corrupt" in proc.logs

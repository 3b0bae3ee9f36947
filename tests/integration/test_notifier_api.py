"""Settings API over real gRPC (TLS, real Ed25519 tokens) and domain events to mail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tmsp.events.v1 import (
    accounts_pb2,
    detections_pb2,
    incidents_pb2,
    notifications_pb2,
)
from tmsp.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from tmsp_common.authn import Principal, Role
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import ACCOUNTS, INCIDENTS, PRODUCT_LIVENESS
from tmsp_common.testing import Infra, ServiceProcess, free_port, wait_until
from tmsp_common.tokens import TokenSigner, public_pem
from tmsp_notifier.testing import RecordingSmtpServer, notifier_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.smtp,
    pytest.mark.grpc,
    pytest.mark.tls,
]

KIND_INCIDENT = notifications_pb2.NOTIFICATION_KIND_INCIDENT


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer(free_port()) as server:
        yield server


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(Ed25519PrivateKey.generate(), "k-test")


@pytest.fixture
async def service(
    infra: Infra, names: Any, smtp: RecordingSmtpServer, tmp_path: Path, signer: TokenSigner
) -> AsyncIterator[tuple[ServiceProcess, Any]]:
    tls_dir = str(tmp_path / "tls")
    port = free_port()
    env = notifier_env(
        infra_env=infra.env(),
        prefix=names.prefix,
        database=names.database("notifier"),
        smtp_port=smtp.port,
        grpc_port=port,
        tls_dir=tls_dir,
        public_keys={signer.kid: public_pem(signer._key).decode()},  # noqa: SLF001
    )
    proc = ServiceProcess("tmsp_notifier", env).start()
    proc.wait_for_log("service ready", timeout=60)
    ch = channel(f"127.0.0.1:{port}", tls=True, tls_dir=tls_dir)
    try:
        yield proc, notifier_pb2_grpc.NotificationSettingsServiceStub(ch)
    finally:
        await ch.close()
        proc.terminate()


def token(signer: TokenSigner, account: str, *roles: Role) -> tuple[tuple[str, str], ...]:
    return bearer(signer.issue(Principal(f"u-{account}", account, frozenset(roles))))


async def test_settings_tenant_isolation_over_grpc(
    service: tuple[ServiceProcess, Any], signer: TokenSigner
) -> None:
    _, stub = service
    admin_a = token(signer, "acct-a", Role.ACCOUNT_ADMINISTRATOR)
    analyst_a = token(signer, "acct-a", Role.ANALYST)
    admin_b = token(signer, "acct-b", Role.ACCOUNT_ADMINISTRATOR)
    operator = token(signer, "provider", Role.PROVIDER_OPERATOR)

    get = notifier_pb2.GetNotificationSettingsRequest(account_id="acct-a", kind=KIND_INCIDENT)
    current = (await stub.GetNotificationSettings(get, metadata=admin_a)).settings
    assert current.enabled and current.max_per_hour == 12 and current.version == 0

    wanted = notifier_pb2.NotificationSettings(
        account_id="acct-a",
        kind=KIND_INCIDENT,
        enabled=True,
        min_severity=detections_pb2.SEVERITY_HIGH,
        notify_administrator=True,
        extra_recipients=["soc@acme.example"],
        max_per_hour=5,
        digest=True,
    )
    update = notifier_pb2.UpdateNotificationSettingsRequest(settings=wanted)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateNotificationSettings(update, metadata=analyst_a)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateNotificationSettings(update, metadata=admin_b)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetNotificationSettings(get, metadata=admin_b)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListNotificationSettings(
            notifier_pb2.ListNotificationSettingsRequest(account_id="acct-a"), metadata=admin_b
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    untouched = (await stub.GetNotificationSettings(get, metadata=admin_a)).settings
    assert untouched == current  # B's refused update changed nothing of A's
    own_b = notifier_pb2.NotificationSettings()
    own_b.CopyFrom(wanted)
    own_b.account_id = "acct-b"
    own_b.extra_recipients[:] = ["b-soc@b.example"]
    await stub.UpdateNotificationSettings(
        notifier_pb2.UpdateNotificationSettingsRequest(settings=own_b), metadata=admin_b
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetNotificationSettings(get)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetNotificationSettings(get, metadata=bearer("not-a-token"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    stored = (await stub.UpdateNotificationSettings(update, metadata=admin_a)).settings
    assert stored.version == 1 and list(stored.extra_recipients) == ["soc@acme.example"]
    read = (await stub.GetNotificationSettings(get, metadata=analyst_a)).settings
    assert read.min_severity == detections_pb2.SEVERITY_HIGH and read.max_per_hour == 5
    seen_by_operator = (await stub.GetNotificationSettings(get, metadata=operator)).settings
    assert seen_by_operator.version == 1
    assert list(seen_by_operator.extra_recipients) == ["soc@acme.example"]  # not B's

    stale = notifier_pb2.UpdateNotificationSettingsRequest(settings=wanted, expected_version=0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateNotificationSettings(stale, metadata=operator)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    injected = notifier_pb2.NotificationSettings()
    injected.CopyFrom(wanted)
    injected.extra_recipients[:] = ["soc@acme.example\r\nBcc: thief@evil.example"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateNotificationSettings(
            notifier_pb2.UpdateNotificationSettingsRequest(settings=injected), metadata=admin_a
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    code_kind = notifier_pb2.GetNotificationSettingsRequest(
        account_id="acct-a", kind=notifications_pb2.NOTIFICATION_KIND_CONFIRMATION_CODE
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetNotificationSettings(code_kind, metadata=admin_a)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    listed = await stub.ListNotificationSettings(
        notifier_pb2.ListNotificationSettingsRequest(account_id="acct-a"), metadata=analyst_a
    )
    assert len(listed.settings) == 7


async def test_domain_events_to_mail_and_delivery_log(
    service: tuple[ServiceProcess, Any],
    signer: TokenSigner,
    smtp: RecordingSmtpServer,
    infra: Infra,
    names: Any,
) -> None:
    _, stub = service
    now = datetime.now(UTC)
    account = accounts_pb2.AccountSnapshot(
        account_id="acct-e",
        name="Acme Events",
        managed_by_email="admin@acme.example",
        time_zone="Asia/Tokyo",
        version=1,
    )
    account.valid_until.CopyFrom(to_timestamp(now + timedelta(days=5)))
    incident = incidents_pb2.Incident(
        incident_id="inc-42",
        account_id="acct-e",
        title="Worm spreading laterally",
        severity=detections_pb2.SEVERITY_HIGH,
        event_count=7,
        status=incidents_pb2.INCIDENT_STATUS_NEW,
        endpoints=[detections_pb2.Endpoint(host="ws-1", ip="10.0.0.5")],
    )
    incident.first_seen.CopyFrom(to_timestamp(datetime(2026, 1, 15, 12, 0, tzinfo=UTC)))
    incident.last_seen.CopyFrom(to_timestamp(datetime(2026, 1, 15, 12, 30, tzinfo=UTC)))
    offline = incidents_pb2.ProductLiveness(
        product_id="tda-9",
        account_id="acct-e",
        state=incidents_pb2.PRODUCT_LIVENESS_STATE_OFFLINE,
    )
    async with EventProducer(
        infra.kafka_bootstrap, service="test", topic_prefix=names.prefix
    ) as producer:
        await producer.publish(ACCOUNTS, account, key="acct-e", account_id="acct-e")
        await asyncio.sleep(1.5)  # let the projection see the account first
        await producer.publish(INCIDENTS, incident, key="inc-42", account_id="acct-e")
        # redelivery of the same incident state, and a lower-severity update: no new mail
        await producer.publish(INCIDENTS, incident, key="inc-42", account_id="acct-e")
        await producer.publish(PRODUCT_LIVENESS, offline, key="tda-9", account_id="acct-e")

    def subjects() -> set[str]:
        return {str(m["Subject"]) for m in smtp.messages}

    expected = {
        "[High] Incident: Worm spreading laterally",
        "Product offline: tda-9",
        "Your TMSP subscription expires in 5 days",
    }
    await wait_until(lambda: expected <= subjects(), timeout=45)
    await asyncio.sleep(1.5)
    assert len(smtp.messages) == 3
    mail = next(m for m in smtp.messages if "Incident" in str(m["Subject"]))
    assert mail["To"] == "admin@acme.example"
    text = mail.get_body(("plain",))
    assert text is not None and "2026-01-15 21:00 JST" in text.get_content()

    admin = token(signer, "acct-e", Role.ACCOUNT_ADMINISTRATOR)
    page = await stub.ListDeliveries(
        notifier_pb2.ListDeliveriesRequest(account_id="acct-e", page_size=2), metadata=admin
    )
    assert len(page.entries) == 2 and page.next_page_token
    rest = await stub.ListDeliveries(
        notifier_pb2.ListDeliveriesRequest(
            account_id="acct-e", page_size=2, page_token=page.next_page_token
        ),
        metadata=admin,
    )
    entries = [*page.entries, *rest.entries]
    assert {e.state for e in entries} == {notifier_pb2.DELIVERY_STATE_SENT}
    assert {e.message_id for e in entries} == {str(m["Message-ID"]) for m in smtp.messages}
    foreign = token(signer, "acct-other", Role.ACCOUNT_ADMINISTRATOR)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListDeliveries(
            notifier_pb2.ListDeliveriesRequest(account_id="acct-e"), metadata=foreign
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

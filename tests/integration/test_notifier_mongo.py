"""The delivery use case on the real Mongo-wire server (FerretDB) with a FakeClock and a
real SMTP server: throttle counter, digest after the window closes, settings CAS, account
projection versions, alert state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tmsp_common.clock import FakeClock
from tmsp_common.errors import FailedPrecondition
from tmsp_common.mongo import connect
from tmsp_common.severity import Severity
from tmsp_common.testing import Infra, free_port
from tmsp_notifier.adapters.memory import RecordingDeadLetters
from tmsp_notifier.adapters.mongo import (
    MongoAccounts,
    MongoAlerts,
    MongoCounter,
    MongoDeliveryLog,
    MongoDigests,
    MongoSettings,
    create_indexes,
)
from tmsp_notifier.adapters.smtp import SmtpConfig, SmtpSender
from tmsp_notifier.domain.model import AccountProfile, DeliveryState, Kind, KindSettings
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.events import (
    EventNotifier,
    IncidentView,
    Liveness,
    LivenessView,
    NonconformingView,
)
from tmsp_notifier.service_layer.rendering import Renderer
from tmsp_notifier.testing import RecordingSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.mongo, pytest.mark.smtp]


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer(free_port()) as server:
        yield server


@pytest.fixture
async def db(infra: Infra, names: Any) -> AsyncIterator[Any]:
    database = await connect(infra.mongo_url, names.database("notifier"))
    await create_indexes(database)
    yield database
    await database.client.drop_database(database.name)
    await database.client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 5, 4, 9, 10, tzinfo=UTC))


@pytest.fixture
def events(db: Any, smtp: RecordingSmtpServer, clock: FakeClock) -> EventNotifier:
    deliverer = Deliverer(
        log=MongoDeliveryLog(db),
        settings=MongoSettings(db),
        accounts=MongoAccounts(db),
        counter=MongoCounter(db),
        digests=MongoDigests(db),
        sender=SmtpSender(SmtpConfig(port=smtp.port, timeout_s=3)),
        dead_letters=RecordingDeadLetters(),
        renderer=Renderer(),
        clock=clock,
        mail_from="TMSP <n@tmsp.example>",
    )
    return EventNotifier(deliverer, MongoAlerts(db))


def incident(i: int, severity: Severity = Severity.HIGH) -> IncidentView:
    return IncidentView(
        incident_id=f"inc-{i:03d}",
        account_id="acct",
        title=f"Incident {i:03d}",
        severity=severity,
        first_seen=None,
        last_seen=None,
        event_count=1,
    )


async def test_incident_storm_becomes_limit_mails_and_one_digest(
    events: EventNotifier, smtp: RecordingSmtpServer, clock: FakeClock
) -> None:
    d = events.deliverer
    assert await d.accounts.upsert(
        AccountProfile("acct", name="Acme", managed_by_email="admin@acme.example", version=2)
    )
    assert not await d.accounts.upsert(AccountProfile("acct", managed_by_email="old@x", version=1))
    await d.settings.put(KindSettings("acct", Kind.INCIDENT, max_per_hour=4))
    for i in range(10):
        await events.on_incident(incident(i), f"ev-{i}")
    for i in range(10):  # redelivered: nothing new
        await events.on_incident(incident(i), f"ev-{i}")
    assert len(smtp.messages) == 4
    assert await d.flush_digests() == 0
    clock.advance(timedelta(hours=1))
    assert await d.flush_digests() == 1
    assert await d.flush_digests() == 0
    assert len(smtp.messages) == 5
    digest = smtp.messages[-1]
    assert digest["Subject"] == "Digest: 6 more incident notifications"
    assert digest["To"] == "admin@acme.example"
    body = digest.get_body(("plain",))
    assert body is not None
    assert all(f"Incident {i:03d}" in body.get_content() for i in range(4, 10))
    # escalation of an already-mailed incident in the next window is mailed at once
    await events.on_incident(incident(0, Severity.CRITICAL), "ev-x")
    assert smtp.messages[-1]["Subject"] == "[Critical] Incident: Incident 000"
    rows = await d.log.list_for_account("acct", limit=100)
    states = [r.state for r in rows]
    assert states.count(DeliveryState.SENT) == 6 and states.count(DeliveryState.DIGESTED) == 6


async def test_settings_compare_and_set(events: EventNotifier) -> None:
    repo = events.deliverer.settings
    first = await repo.put(KindSettings("acct", Kind.PRODUCT_OFFLINE, max_per_hour=2))
    assert first.version == 1
    with pytest.raises(FailedPrecondition):
        await repo.put(KindSettings("acct", Kind.PRODUCT_OFFLINE, max_per_hour=3))
    second = await repo.put(KindSettings("acct", Kind.PRODUCT_OFFLINE, max_per_hour=3, version=1))
    assert second.version == 2
    assert await repo.get("acct", Kind.PRODUCT_OFFLINE) == second


async def test_endpoint_and_liveness_state_and_reminders_on_ferretdb(
    events: EventNotifier, smtp: RecordingSmtpServer, clock: FakeClock
) -> None:
    valid_until = clock.now() + timedelta(days=40)
    assert await events.deliverer.accounts.upsert(
        AccountProfile(
            "acct",
            managed_by_email="admin@acme.example",
            time_zone="Europe/Paris",
            valid_until=valid_until,
            version=1,
        )
    )

    def endpoint(*threats: str, cleared: bool = False) -> NonconformingView:
        return NonconformingView("acct", "h-1", "h-1", threats, "unresolved threat", cleared)

    await events.on_nonconforming(endpoint("WORM_X"), "n1")
    await events.on_nonconforming(endpoint("WORM_X"), "n2")  # same threat again: no mail
    await events.on_nonconforming(endpoint(cleared=True), "n3")
    await events.on_nonconforming(endpoint("WORM_X"), "n4")  # nonconforming again: mail
    live = [
        LivenessView("tda-1", "acct", s)
        for s in (Liveness.OFFLINE, Liveness.LOGS_NOT_RECEIVED, Liveness.ONLINE)
    ]
    for i, view in enumerate(live):
        await events.on_liveness(view, f"l{i}")
    # the subscription reminder is the notifier's own periodic check over the accounts
    # projection: nothing 31 days before, the 30-day one once, then the 7-day one
    clock.set(valid_until - timedelta(days=31))
    assert await events.check_subscriptions() == 0
    clock.set(valid_until - timedelta(days=30))
    await events.check_subscriptions()
    await events.check_subscriptions()
    clock.set(valid_until - timedelta(days=7))
    await events.check_subscriptions()
    assert [str(m["Subject"]) for m in smtp.messages] == [
        "Nonconforming endpoint: h-1",
        "Nonconforming endpoint: h-1",
        "Product offline: tda-1",
        "Logs not received from tda-1",
        "Product back online: tda-1",
        "Your TMSP subscription expires in 30 days",
        "Your TMSP subscription expires in 7 days",
    ]
    body = smtp.messages[-1].get_body(("plain",))
    assert body is not None
    assert valid_until.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d %H:%M") in (
        body.get_content()
    )

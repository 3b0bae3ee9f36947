from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tmsp_common.clock import FakeClock
from tmsp_common.severity import Severity
from tmsp_notifier.adapters.memory import RecordingSender
from tmsp_notifier.domain.model import AccountProfile, Kind, KindSettings
from tmsp_notifier.domain.policy import should_notify_nonconforming
from tmsp_notifier.service_layer.events import (
    EventNotifier,
    IncidentView,
    Liveness,
    LivenessView,
    NonconformingView,
)

ACCOUNT = AccountProfile(
    "acct",
    name="Acme",
    managed_by_email="admin@acme.example",
    time_zone="Europe/Berlin",
    valid_until=datetime(2026, 4, 1, tzinfo=UTC),
    version=1,
)


def incident(sev: Severity, iid: str = "inc-1") -> IncidentView:
    return IncidentView(
        incident_id=iid,
        account_id="acct",
        title="Worm spreading",
        severity=sev,
        first_seen=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        last_seen=datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        event_count=3,
        endpoints=("10.0.0.5",),
    )


async def test_incident_new_then_escalated_then_repeated(
    events: EventNotifier, sender: RecordingSender
) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)
    await events.on_incident(incident(Severity.LOW), "e1")  # below MEDIUM
    assert sender.sent == []
    await events.on_incident(incident(Severity.MEDIUM), "e2")
    await events.on_incident(incident(Severity.MEDIUM), "e3")  # no change
    await events.on_incident(incident(Severity.MEDIUM), "e2")  # redelivered
    await events.on_incident(incident(Severity.CRITICAL), "e4")
    assert [m["Subject"] for m in sender.sent] == [
        "[Medium] Incident: Worm spreading",
        "[Critical] Incident: Worm spreading",
    ]
    assert sender.sent[0]["To"] == "admin@acme.example"
    body = sender.sent[0].get_body(("plain",))
    assert body is not None and "2026-03-01 10:00 CET" in body.get_content()


async def test_incident_threshold_and_extra_recipients_from_settings(
    events: EventNotifier, sender: RecordingSender
) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)
    await events.deliverer.settings.put(
        KindSettings(
            "acct", Kind.INCIDENT, min_severity=Severity.HIGH, extra_recipients=("soc@x.example",)
        )
    )
    await events.on_incident(incident(Severity.MEDIUM), "e1")
    await events.on_incident(incident(Severity.HIGH, "inc-2"), "e2")
    (msg,) = sender.sent
    assert msg["To"] == "admin@acme.example, soc@x.example"


async def test_disabled_kind_sends_nothing(events: EventNotifier, sender: RecordingSender) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)
    await events.deliverer.settings.put(KindSettings("acct", Kind.INCIDENT, enabled=False))
    await events.on_incident(incident(Severity.CRITICAL), "e1")
    assert sender.sent == []


async def test_liveness_offline_online_logs(events: EventNotifier, sender: RecordingSender) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)

    def view(state: str) -> LivenessView:
        return LivenessView("tda-1", "acct", state, since=datetime(2026, 3, 1, tzinfo=UTC))

    await events.on_liveness(view(Liveness.ONLINE), "l0")  # first sight: nothing
    await events.on_liveness(view(Liveness.OFFLINE), "l1")
    await events.on_liveness(view(Liveness.OFFLINE), "l2")  # still offline
    await events.on_liveness(view(Liveness.ONLINE), "l3")
    await events.on_liveness(view(Liveness.LOGS_NOT_RECEIVED), "l4")
    await events.on_liveness(view(Liveness.LOGS_NOT_RECEIVED), "l5")  # still missing
    # logs and connectivity are separate: offline, logs missing, then online still mails
    await events.on_liveness(view(Liveness.OFFLINE), "l6")
    await events.on_liveness(view(Liveness.ONLINE), "l7")
    await events.on_liveness(view(Liveness.LOGS_RESUMED), "l8")
    await events.on_liveness(view(Liveness.LOGS_NOT_RECEIVED), "l9")
    assert [m["Subject"] for m in sender.sent] == [
        "Product offline: tda-1",
        "Product back online: tda-1",
        "Logs not received from tda-1",
        "Product offline: tda-1",
        "Product back online: tda-1",
        "Logs not received from tda-1",
    ]


async def test_nonconforming_mailed_when_it_starts_grows_or_fails_not_when_repeated(
    events: EventNotifier, sender: RecordingSender
) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)

    def view(*threats: str, reason: str = "unresolved threat") -> NonconformingView:
        return NonconformingView("acct", "host-7", "host-7", threats, reason)

    await events.on_nonconforming(view("WORM_X"), "n1")  # became nonconforming: mail
    await events.on_nonconforming(view("WORM_X"), "n1")  # redelivered
    await events.on_nonconforming(view("WORM_X"), "n2")  # same threat, newer result
    await events.on_nonconforming(view("WORM_X", "TROJ_Y"), "n3")  # a new threat: mail
    await events.on_nonconforming(view("TROJ_Y"), "n4")  # one cleaned, nothing new
    failed = view("TROJ_Y", reason="threat mitigation failed")
    await events.on_nonconforming(failed, "n5")  # mitigation failed: mail
    await events.on_nonconforming(failed, "n6")
    await events.on_nonconforming(NonconformingView("acct", "host-7", "host-7", cleared=True), "n7")
    await events.on_nonconforming(view("TROJ_Y"), "n8")  # nonconforming again: mail
    bodies = [m.get_body(("plain",)) for m in sender.sent]
    texts = [b.get_content() for b in bodies if b is not None]
    assert len(texts) == 4
    assert "WORM_X" in texts[0] and "TROJ_Y" in texts[1] and "failed" in texts[2]
    assert "TROJ_Y" in texts[3]


def test_nonconforming_rule() -> None:
    x, xy = frozenset({"X"}), frozenset({"X", "Y"})
    assert should_notify_nonconforming(x, "unresolved threat", None)
    assert not should_notify_nonconforming(x, "unresolved threat", (xy, "unresolved threat"))
    assert should_notify_nonconforming(xy, "unresolved threat", (x, "unresolved threat"))
    assert should_notify_nonconforming(x, "threat mitigation failed", (x, "unresolved threat"))
    assert not should_notify_nonconforming(x, "unresolved threat", (x, "threat mitigation failed"))


async def test_subscription_reminders_sent_once_each(
    events: EventNotifier, sender: RecordingSender, clock: FakeClock
) -> None:
    await events.deliverer.accounts.upsert(ACCOUNT)
    assert ACCOUNT.valid_until is not None
    clock.set(ACCOUNT.valid_until - timedelta(days=31))
    assert await events.check_subscriptions() == 0
    clock.set(ACCOUNT.valid_until - timedelta(days=29))
    await events.check_subscriptions()
    await events.check_subscriptions()
    clock.set(ACCOUNT.valid_until - timedelta(days=6, hours=23))
    await events.check_subscriptions()
    clock.set(ACCOUNT.valid_until - timedelta(hours=5))
    await events.check_subscriptions()
    await events.check_subscriptions()
    assert [m["Subject"] for m in sender.sent] == [
        "Your TMSP subscription expires in 29 days",
        "Your TMSP subscription expires in 7 days",
        "Your TMSP subscription expires in 1 day",
    ]


async def test_no_recipient_no_mail(events: EventNotifier, sender: RecordingSender) -> None:
    await events.on_incident(incident(Severity.CRITICAL), "e1")  # account unknown
    assert sender.sent == []

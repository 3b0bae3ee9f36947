from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tmsp_common.clock import FakeClock
from tmsp_common.errors import InvalidArgument
from tmsp_common.severity import Severity
from tmsp_notifier.domain import policy
from tmsp_notifier.domain.model import AccountProfile, Attachment, Kind, KindSettings
from tmsp_notifier.domain.validation import (
    validate_address,
    validate_attachments,
    validate_notification_id,
    validate_recipients,
    validate_subject,
)


@pytest.mark.parametrize(
    "bad",
    [
        "a@example.com\r\nBcc: evil@example.com",
        "a@example.com\nBcc: evil@example.com",
        "a@example.com\rX",
        "Evil <a@example.com>",
        "a@example.com, b@example.com",
        "not-an-address",
        "a@",
        "",
    ],
)
def test_addresses_with_injection_or_garbage_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_address(bad)
    assert err.value.field == "recipients"


def test_valid_addresses_are_normalised_and_deduplicated() -> None:
    assert validate_address("Admin@Example.COM") == "Admin@example.com"
    assert validate_recipients(["a@x.example", "A@x.example", "b@x.example"]) == (
        "a@x.example",
        "b@x.example",
    )


@pytest.mark.parametrize("bad", ["Hello\r\nBcc: x@y.z", "a\nb", "", " ", "x" * 201])
def test_bad_subjects_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_subject(bad)


@pytest.mark.parametrize("bad", ["", "a b", "a\r\nb", "abc\n", "a\tb", "x" * 201, "-start", "é1"])
def test_notification_ids_are_printable_ascii_without_spaces(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_notification_id(bad)
    assert err.value.field == "notification_id"
    assert validate_notification_id("0f9e-ab_c.1") == "0f9e-ab_c.1"
    assert validate_notification_id("locked:u-1:1767225600") == "locked:u-1:1767225600"


def test_message_id_is_derived_from_the_id_and_always_safe() -> None:
    assert policy.message_id("c-1") == "<c-1@tmsp.notifier>"
    # auth's lockout ids hold colons, which a Message-ID may not: hashed, still deterministic
    locked = policy.message_id("locked:u-1:1767225600")
    assert locked == policy.message_id("locked:u-1:1767225600")
    assert locked != policy.message_id("locked:u-1:1767225601")
    assert re.fullmatch(r"<h-[0-9a-f]{40}@tmsp\.notifier>", locked)
    assert policy.message_id("x" * 129).startswith("<h-")


def test_attachments_are_bounded_and_safe() -> None:
    ok = Attachment("report.pdf", "application/pdf", b"x" * 600)
    assert validate_attachments([ok], 1000) == (ok,)
    with pytest.raises(InvalidArgument, match="1200 bytes"):
        validate_attachments([ok, ok], 1000)
    with pytest.raises(InvalidArgument):
        validate_attachments([Attachment("a\r\nb.pdf", "application/pdf", b"")], 1000)
    with pytest.raises(InvalidArgument):
        validate_attachments([Attachment("../x.pdf", "application/pdf", b"")], 1000)
    with pytest.raises(InvalidArgument):
        validate_attachments([Attachment("x.pdf", "application/pdf\r\nX: y", b"")], 1000)
    with pytest.raises(InvalidArgument):
        validate_attachments([Attachment("x.pdf", "application/pdf\n", b"")], 1000)


def test_throttle_allows_twelve_an_hour_then_digests_like_wazuh_maild() -> None:
    s = KindSettings.default("acct", Kind.INCIDENT)
    assert s.max_per_hour == 12
    decisions = [policy.throttle_decision(n, s) for n in range(1, 15)]
    assert decisions[:12] == [policy.Decision.SEND] * 12
    assert decisions[12:] == [policy.Decision.DIGEST] * 2
    no_digest = KindSettings("acct", Kind.INCIDENT, max_per_hour=1, digest=False)
    assert policy.throttle_decision(2, no_digest) == policy.Decision.DROP
    unlimited = KindSettings("acct", Kind.INCIDENT, max_per_hour=0)
    assert policy.throttle_decision(10_000, unlimited) == policy.Decision.SEND


def test_security_kinds_are_never_throttled_by_default() -> None:
    for kind in (Kind.CONFIRMATION_CODE, Kind.EMERGENCY_CODE, Kind.PASSWORD_RESET):
        assert KindSettings.default("a", kind).max_per_hour == 0
        assert not kind.configurable


def test_windows_are_hourly_and_digest_is_due_when_the_window_closes() -> None:
    clock = FakeClock(datetime(2026, 3, 1, 10, 15, tzinfo=UTC))
    start = policy.window_start(clock.now())
    assert start == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert not policy.digest_due(start, clock.now())
    clock.advance(timedelta(minutes=44, seconds=59))
    assert not policy.digest_due(start, clock.now())
    clock.advance(1)
    assert policy.digest_due(start, clock.now())
    assert policy.window_start(clock.now()) == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)


def test_incident_rule_new_or_escalated_above_threshold() -> None:
    t = Severity.MEDIUM
    assert not policy.should_notify_incident(Severity.LOW, None, t)
    assert policy.should_notify_incident(Severity.MEDIUM, None, t)
    assert not policy.should_notify_incident(Severity.MEDIUM, Severity.MEDIUM, t)
    assert policy.should_notify_incident(Severity.HIGH, Severity.MEDIUM, t)
    assert not policy.should_notify_incident(Severity.MEDIUM, Severity.HIGH, t)


def test_recipients_are_the_administrator_plus_extras() -> None:
    account = AccountProfile("a", managed_by_email="admin@x.example")
    s = KindSettings("a", Kind.INCIDENT, extra_recipients=("soc@x.example", "ADMIN@x.example"))
    assert policy.resolve_recipients(account, s) == ("admin@x.example", "soc@x.example")
    s2 = KindSettings("a", Kind.INCIDENT, notify_administrator=False, extra_recipients=())
    assert policy.resolve_recipients(account, s2) == ()
    assert policy.resolve_recipients(None, s) == ("soc@x.example", "ADMIN@x.example")


def test_subscription_reminders_30_7_1_each_once() -> None:
    until = datetime(2026, 6, 30, tzinfo=UTC)
    account = AccountProfile("a", valid_until=until)
    clock = FakeClock(until - timedelta(days=31))
    assert policy.due_reminder(account, clock.now()) is None
    clock.set(until - timedelta(days=30))
    r30 = policy.due_reminder(account, clock.now())
    assert r30 is not None and r30.days_before == 30
    clock.advance(timedelta(days=10))
    assert policy.due_reminder(account, clock.now()) == r30  # same id: sent once
    clock.set(until - timedelta(days=6))
    r7 = policy.due_reminder(account, clock.now())
    assert r7 is not None and r7.days_before == 7 and r7.notification_id != r30.notification_id
    clock.set(until - timedelta(hours=1))
    r1 = policy.due_reminder(account, clock.now())
    assert r1 is not None and r1.days_before == 1
    clock.set(until)
    assert policy.due_reminder(account, clock.now()) is None
    renewed_until = until + timedelta(days=365)
    renewed = AccountProfile("a", valid_until=renewed_until)
    clock.set(renewed_until - timedelta(days=30))
    r_new = policy.due_reminder(renewed, clock.now())
    assert r_new is not None and r_new.notification_id != r30.notification_id


def test_derived_ids_are_deterministic_and_message_id_safe() -> None:
    a = policy.derived_id("incident", "i1", "4", "a@x")
    assert a == policy.derived_id("incident", "i1", "4", "a@x")
    assert a != policy.derived_id("incident", "i1", "5", "a@x")
    assert validate_notification_id(a) == a
    assert policy.message_id("n-1") == "<n-1@tmsp.notifier>"


def test_dates_are_formatted_in_the_account_time_zone() -> None:
    when = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert policy.format_local(when, "Europe/Berlin") == "2026-01-15 13:00 CET"
    assert policy.format_local(when, "Asia/Tokyo") == "2026-01-15 21:00 JST"
    assert policy.format_local(when, "Not/AZone") == "2026-01-15 12:00 UTC"
    assert policy.format_local(None, "UTC") == "-"

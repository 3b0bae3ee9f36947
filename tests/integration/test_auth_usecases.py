"""Auth's use cases in-process with a fake clock, on the real FerretDB and Kafka.

Time-dependent rules (lockout periods that grow, code expiry, challenge expiry, signing key
rotation) are checked exactly by moving a FakeClock; storage and the bus are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pyotp
import pytest
from prometheus_client import REGISTRY

from tmsp_auth.adapters.events import NotificationKind
from tmsp_auth.adapters.repositories import SigningKeyRepository
from tmsp_auth.adapters.signing_keys import SigningKeys
from tmsp_auth.bootstrap import App, build
from tmsp_auth.config import AuthSettings
from tmsp_auth.domain import totp
from tmsp_auth.domain.crypto import Keyring
from tmsp_auth.domain.lockout import HOURLY_HARD_CAP
from tmsp_auth.domain.passwords import Argon2Params, Hasher
from tmsp_auth.entrypoints.main import TOPICS
from tmsp_auth.service_layer.accounts import AccountFields
from tmsp_auth.testing import Mailbox
from tmsp_common import mongo
from tmsp_common.authn import Principal, Role
from tmsp_common.clock import FakeClock
from tmsp_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.testing import Infra, unique

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo]

PASSWORD = "a-long-enough-passphrase"


@asynccontextmanager
async def make_app(infra: Infra, **overrides: object) -> AsyncIterator[tuple[App, FakeClock]]:
    name = unique("itauthuc")
    settings = AuthSettings.model_validate(
        {
            "mongo_database": f"{name}_auth",
            "topic_prefix": f"{name}.",
            "kafka_bootstrap": infra.kafka_bootstrap,
            "encryption_keys": Keyring.generate_spec("uc1"),
            "argon2_memory_kib": 256,
            "argon2_time_cost": 1,
            "lockout_threshold": 3,
            **overrides,
        }
    )
    db = await mongo.connect(infra.mongo_url, settings.mongo_database)
    await ensure_topics(infra.kafka_bootstrap, TOPICS, prefix=settings.topic_prefix)
    producer = EventProducer(
        infra.kafka_bootstrap, service="auth", topic_prefix=settings.topic_prefix
    )
    await producer.start()
    clock = FakeClock()
    try:
        yield await build(settings, db, producer, clock=clock), clock
    finally:
        await producer.stop()
        await db.client.drop_database(db.name)
        await mongo.close(db)


@pytest.fixture
async def app(infra: Infra) -> AsyncIterator[tuple[App, FakeClock]]:
    async with make_app(infra) as made:
        yield made


async def user(app: App, *, totp_secret: str = "") -> tuple[str, str]:
    account = await app.accounts.create_account(None, AccountFields(name=unique("Acct ")))
    email = f"{unique('u')}@example.com"
    doc = await app.accounts.add_user(
        str(account["_id"]), email, "", [Role.ACCOUNT_ADMINISTRATOR], password=PASSWORD
    )
    if totp_secret:
        await app.ctx.users.set_fields(
            str(doc["_id"]), {"totp": app.ctx.seal_totp(str(doc["_id"]), totp_secret)}
        )
    return str(doc["_id"]), email


async def fail(app: App, email: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Unauthenticated):
            await app.auth.login(email, "wrong-password-123")


async def test_lockout_lasts_15_minutes_then_doubles(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    _uid, email = await user(a)
    await fail(a, email, 3)
    with pytest.raises(Unauthenticated):  # locked: the right password is refused
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=15) - timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(seconds=1))
    await fail(a, email, 3)  # a fresh epoch: three more attempts, then the second lockout
    clock.advance(timedelta(minutes=15))
    with pytest.raises(Unauthenticated):  # the second lockout lasts 30 minutes
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=15))
    assert (await a.auth.login(email, PASSWORD)).session is not None
    # A completed login resets the growth: the next lockout is 15 minutes again.
    await fail(a, email, 3)
    clock.advance(timedelta(minutes=15))
    assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_failures_below_threshold_are_forgiven_by_a_login(app: tuple[App, FakeClock]) -> None:
    a, _clock = app
    _uid, email = await user(a)
    for _ in range(3):
        await fail(a, email, 2)
        assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_second_factor_failures_count_toward_lockout(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)
    for _ in range(3):
        challenge = await a.auth.login(email, PASSWORD)  # the password alone resets nothing
        with pytest.raises(Unauthenticated):
            await a.auth.verify_second_factor(challenge.challenge_id, totp_code="000000")
    with pytest.raises(Unauthenticated):  # locked: not even a challenge
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=15))
    challenge = await a.auth.login(email, PASSWORD)
    code = pyotp.TOTP(secret).at(clock.now())
    session, _ = await a.auth.verify_second_factor(challenge.challenge_id, totp_code=code)
    assert session.access_token


def locked_until(doc: dict[str, object] | None) -> object:
    return (doc or {}).get("locked_until")


async def test_logins_cancelled_during_the_check_count_as_failures_and_lock_temporarily(
    app: tuple[App, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client deadline cancels the handler while the password is hashed: each such
    attempt is one failure, so the threshold of them is an ordinary, expiring lockout."""
    a, clock = app
    uid, email = await user(a)
    checking = asyncio.Event()

    async def hashing_forever(_stored: str, _password: str) -> bool:
        checking.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(a.ctx, "verify_password", hashing_forever)
        for _ in range(3):
            checking.clear()
            call = asyncio.create_task(a.auth.login(email, PASSWORD))
            await checking.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
    lockout = await a.ctx.users.lockout(uid)
    assert locked_until(lockout) == clock.now() + timedelta(minutes=15)  # visible to admins
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=15))
    assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_a_bus_outage_while_recording_the_last_failure_still_locks(
    app: tuple[App, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, clock = app
    uid, email = await user(a)
    await fail(a, email, 2)

    async def bus_down(*_args: object, **_kwargs: object) -> None:
        raise Unavailable("the event bus is unavailable; try again")

    with monkeypatch.context() as patch:
        patch.setattr(a.ctx.events, "audit", bus_down)
        with pytest.raises(Unavailable):
            await a.auth.login(email, "wrong-password-123")
    assert locked_until(await a.ctx.users.lockout(uid)) == clock.now() + timedelta(minutes=15)
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=15))
    assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_slots_left_by_a_crashed_process_stop_blocking_after_the_lease(
    app: tuple[App, FakeClock],
) -> None:
    """Reservations nobody settles (the pod died mid-check) count as failures once their
    lease (one minute) is over: a lockout from the last of them, then logins work."""
    a, clock = app
    uid, email = await user(a)
    for _ in range(3):
        assert await a.ctx.users.reserve_attempt(uid, a.ctx.config.lockout, clock.now())
    crashed_at = clock.now()
    clock.advance(timedelta(seconds=59))  # still within the lease: may be in flight
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    assert locked_until(await a.ctx.users.lockout(uid)) is None
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    assert locked_until(await a.ctx.users.lockout(uid)) == crashed_at + timedelta(minutes=15)
    clock.set(crashed_at + timedelta(minutes=15))
    assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_a_challenge_completed_meanwhile_gives_its_attempt_back(
    app: tuple[App, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)

    async def completed_by_another_request(_challenge_id: str) -> bool:
        return False

    with monkeypatch.context() as patch:
        patch.setattr(a.ctx.challenges, "complete", completed_by_another_request)
        for _ in range(3):
            challenge = await a.auth.login(email, PASSWORD)
            with pytest.raises(Unauthenticated, match="challenge"):
                await a.auth.verify_second_factor(
                    challenge.challenge_id, totp_code=pyotp.TOTP(secret).at(clock.now())
                )
            clock.advance(30)
    challenge = await a.auth.login(email, PASSWORD)
    session, _ = await a.auth.verify_second_factor(
        challenge.challenge_id, totp_code=pyotp.TOTP(secret).at(clock.now())
    )
    assert session.access_token


async def test_totp_window_is_one_step_each_way(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)
    old = pyotp.TOTP(secret).at(clock.now())
    clock.advance(60)  # two steps later: too old
    challenge = await a.auth.login(email, PASSWORD)
    with pytest.raises(Unauthenticated):
        await a.auth.verify_second_factor(challenge.challenge_id, totp_code=old)
    late = pyotp.TOTP(secret).at(clock.now() - timedelta(seconds=30))
    session, _ = await a.auth.verify_second_factor(challenge.challenge_id, totp_code=late)
    assert session.access_token


async def test_expired_and_invalid_totp_codes_are_told_apart_after_the_password(
    app: tuple[App, FakeClock],
) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)
    old = pyotp.TOTP(secret).at(clock.now())
    clock.advance(90)  # three steps later: outside the +-1 window, so expired
    now = clock.now()
    invalid = next(
        c
        for c in (f"{n:06d}" for n in range(1_000_000))
        if totp.matching_step(secret, c, now) is None and not totp.is_stale(secret, c, now)
    )
    challenge = await a.auth.login(email, PASSWORD)
    with pytest.raises(Unauthenticated, match="expired"):
        await a.auth.verify_second_factor(challenge.challenge_id, totp_code=old)
    with pytest.raises(Unauthenticated, match="invalid"):
        await a.auth.verify_second_factor(challenge.challenge_id, totp_code=invalid)
    # Before the password step nobody learns anything: one answer for every failure.
    with pytest.raises(Unauthenticated, match="invalid email or password"):
        await a.auth.login(email, "not-the-password-123")


async def test_challenge_expires_after_five_minutes(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)
    challenge = await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=5))
    with pytest.raises(Unauthenticated, match="challenge"):
        await a.auth.verify_second_factor(
            challenge.challenge_id, totp_code=pyotp.TOTP(secret).at(clock.now())
        )


async def test_emergency_code_expiry_is_told_apart_after_the_password(
    app: tuple[App, FakeClock], infra: Infra
) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    _uid, email = await user(a, totp_secret=secret)
    challenge = await a.auth.login(email, PASSWORD)
    await a.auth.request_emergency_code(challenge.challenge_id)
    with pytest.raises(RateLimited):  # resend throttle
        await a.auth.request_emergency_code(challenge.challenge_id)
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        note = await mail.next(NotificationKind.NOTIFICATION_KIND_EMERGENCY_CODE, email)
    clock.advance(timedelta(minutes=4))
    challenge = await a.auth.login(email, PASSWORD)
    clock.advance(timedelta(minutes=6))  # 10 minutes after issue
    with pytest.raises(Unauthenticated, match="expired"):
        await a.auth.verify_second_factor(
            challenge.challenge_id, emergency_code=note.params["code"]
        )
    with pytest.raises(Unauthenticated, match="invalid"):
        await a.auth.verify_second_factor(challenge.challenge_id, emergency_code="00000000")


async def test_signing_keys_rotate_and_old_keys_stay_published(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    first = (await a.ctx.keys.signer()).kid
    clock.advance(timedelta(days=30))
    second = (await a.ctx.keys.signer()).kid
    assert second != first
    kids = {k.kid: k.active for k in await a.ctx.keys.public_keys()}
    assert kids == {first: False, second: True}
    clock.advance(timedelta(days=61))
    await a.ctx.keys.signer()
    assert first not in {k.kid for k in await a.ctx.keys.public_keys()}


async def test_validation_errors_name_the_field_and_change_nothing(
    app: tuple[App, FakeClock],
) -> None:
    a, _clock = app
    uid, email = await user(a)
    session = (await a.auth.login(email, PASSWORD)).session
    assert session is not None
    principal = Principal(
        uid, session.account_id, frozenset({Role.ACCOUNT_ADMINISTRATOR}), session.session_id
    )
    with pytest.raises(InvalidArgument) as info:
        await a.auth.change_password(principal, PASSWORD, "short")
    assert info.value.field == "new_password"
    assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_hourly_hard_cap_holds_whatever_the_threshold(infra: Infra) -> None:
    async with make_app(infra, lockout_threshold=10_000, lockout_minutes=1) as (a, clock):
        _uid, email = await user(a)
        await fail(a, email, HOURLY_HARD_CAP)  # the threshold is capped at 100 too
        assert len(await a.ctx.users.markers.coll.distinct("_id", {"kind": "attempt"})) == 100
        clock.advance(timedelta(minutes=2))  # the 1-minute lockout is over, the hour is not
        with pytest.raises(Unauthenticated):
            await a.auth.login(email, PASSWORD)
        clock.advance(timedelta(minutes=58))
        assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_changed_argon2_parameters_rehash_on_login(infra: Infra) -> None:
    async with make_app(infra) as (a, _clock):
        uid, email = await user(a)
        before = (await a.ctx.users.get(uid) or {})["password_hash"]
        stronger = Hasher(Argon2Params(memory_kib=512, time_cost=1))
        a.ctx.hasher = stronger
        assert (await a.auth.login(email, PASSWORD)).session is not None
        after = (await a.ctx.users.get(uid) or {})["password_hash"]
        assert after != before and "m=512" in after and not stronger.needs_rehash(after)
        assert (await a.auth.login(email, PASSWORD)).session is not None


async def test_reset_requests_are_throttled_per_address(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    uid, email = await user(a)
    await a.auth.request_password_reset(email)
    await a.auth.request_password_reset(email.upper())  # same answer, no second link
    assert await a.ctx.tokens.coll.count_documents({"user_id": uid}) == 1
    clock.advance(60)
    await a.auth.request_password_reset(email)
    assert await a.ctx.tokens.coll.count_documents({"user_id": uid}) == 2


async def test_a_rotation_by_one_replica_reaches_the_others(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    replica = SigningKeys(
        SigningKeyRepository(a.ctx.users.coll.database),
        a.ctx.keyring,
        clock,
        rotation=timedelta(days=30),
        access_ttl=timedelta(minutes=5),
    )
    await replica.load()
    first = (await a.ctx.keys.signer()).kid
    assert set(await replica.key_map()) == {first}
    clock.advance(timedelta(days=30))
    rotated = (await a.ctx.keys.signer()).kid
    assert rotated != first
    assert set(await replica.key_map()) == {first, rotated}  # what a verifier asks on a new kid


def hashes_so_far() -> float:
    return REGISTRY.get_sample_value("tmsp_auth_password_hash_seconds_count") or 0.0


async def test_unknown_disabled_locked_and_wrong_cost_one_hash_each(
    app: tuple[App, FakeClock],
) -> None:
    a, _clock = app
    uid, email = await user(a)
    _other, disabled = await user(a)
    await a.ctx.users.set_fields(_other, {"disabled": True})
    costs = {}
    for label, address in (
        ("unknown", f"nobody-{email}"),
        ("disabled", disabled),
        ("wrong", email),
    ):
        before = hashes_so_far()
        with pytest.raises(Unauthenticated, match="^invalid email or password$"):
            await a.auth.login(address, "wrong-password-123")
        costs[label] = hashes_so_far() - before
    await fail(a, email, 2)  # the threshold (3) is reached: locked
    before = hashes_so_far()
    with pytest.raises(Unauthenticated, match="^invalid email or password$"):
        await a.auth.login(email, PASSWORD)
    costs["locked"] = hashes_so_far() - before
    assert costs == {"unknown": 1, "disabled": 1, "wrong": 1, "locked": 1}
    assert (await a.ctx.users.lockout(uid) or {}).get("lockouts") == 1


async def test_change_password_with_2fa_needs_a_totp_code(infra: Infra) -> None:
    async with make_app(infra, lockout_threshold=10) as (a, clock):
        await _change_password_with_2fa(a, clock)


async def _change_password_with_2fa(a: App, clock: FakeClock) -> None:
    secret = pyotp.random_base32(32)
    uid, email = await user(a, totp_secret=secret)
    challenge = await a.auth.login(email, PASSWORD)
    session, _ = await a.auth.verify_second_factor(
        challenge.challenge_id, totp_code=pyotp.TOTP(secret).at(clock.now())
    )
    principal = Principal(
        uid, session.account_id, frozenset({Role.ACCOUNT_ADMINISTRATOR}), session.session_id
    )
    new = "another-long-passphrase"
    with pytest.raises(InvalidArgument) as info:
        await a.auth.change_password(principal, PASSWORD, new)
    assert info.value.field == "totp_code"
    with pytest.raises(Unauthenticated):
        await a.auth.change_password(principal, "wrong-password-123", new, "123456")
    clock.advance(30)
    good = pyotp.TOTP(secret).at(clock.now())
    wrong = "000000" if good != "000000" else "111111"
    with pytest.raises(Unauthenticated):
        await a.auth.change_password(principal, PASSWORD, new, wrong)
    assert (await a.auth.login(email, PASSWORD)).challenge_id  # unchanged so far
    await a.auth.change_password(principal, PASSWORD, new, good)
    with pytest.raises(Unauthenticated):
        await a.auth.login(email, PASSWORD)
    assert (await a.auth.login(email, new)).challenge_id  # and 2FA is still on


async def test_reset_token_is_hashed_single_use_and_short_lived(
    app: tuple[App, FakeClock], infra: Infra
) -> None:
    a, clock = app
    uid, email = await user(a)
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        await a.auth.request_password_reset(email)
        first = (await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email)).params
        clock.advance(60)
        await a.auth.request_password_reset(email)
        second = (await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email)).params
    tokens = [p["reset_url"].rsplit("token=", 1)[1] for p in (first, second)]
    assert first["expires_minutes"] == "30"
    stored = [d async for d in a.ctx.tokens.coll.find({"user_id": uid})]
    assert len(stored) == 2 and not {str(d["_id"]) for d in stored} & set(tokens)
    clock.advance(timedelta(minutes=29))  # the first link is 30 minutes old now
    with pytest.raises(InvalidArgument) as info:
        await a.auth.reset_password(tokens[0], "a-brand-new-passphrase")
    assert info.value.field == "token"
    assert (await a.auth.login(email, PASSWORD)).session is not None  # unchanged
    await a.auth.reset_password(tokens[1], "a-brand-new-passphrase")
    with pytest.raises(InvalidArgument):
        await a.auth.reset_password(tokens[1], "yet-another-passphrase")
    assert (await a.auth.login(email, "a-brand-new-passphrase")).session is not None


async def test_an_invitation_cannot_set_the_email_address_as_password(
    app: tuple[App, FakeClock], infra: Infra
) -> None:
    a, _clock = app
    account = await a.accounts.create_account(None, AccountFields(name=unique("Acct ")))
    email = f"{unique('invited')}@Example.com"
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        await a.accounts.add_user(str(account["_id"]), email, "", [Role.ANALYST])
        invite = (await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email)).params
    assert invite["invite"] == "true"
    token = invite["reset_url"].rsplit("token=", 1)[1]
    with pytest.raises(InvalidArgument, match="email address") as info:
        await a.auth.reset_password(token, email.lower())
    assert info.value.field == "new_password"
    await a.auth.reset_password(token, "a-brand-new-passphrase")  # the link is still good
    assert (await a.auth.login(email, "a-brand-new-passphrase")).session is not None


async def test_an_invitation_link_lasts_72_hours(app: tuple[App, FakeClock], infra: Infra) -> None:
    """An invitation link lives longer than a reset link (30 minutes): 72 hours, no more."""
    a, clock = app
    account = await a.accounts.create_account(None, AccountFields(name=unique("Acct ")))
    tokens = []
    emails = [f"{unique('invited')}@example.com" for _ in range(2)]
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        for email in emails:
            await a.accounts.add_user(str(account["_id"]), email, "", [Role.ANALYST])
            invite = await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email)
            tokens.append(invite.params["reset_url"].rsplit("token=", 1)[1])
    clock.advance(timedelta(hours=72) - timedelta(seconds=1))
    await a.auth.reset_password(tokens[0], "a-brand-new-passphrase")  # still good
    assert (await a.auth.login(emails[0], "a-brand-new-passphrase")).session is not None
    clock.advance(timedelta(seconds=2))
    with pytest.raises(InvalidArgument) as info:
        await a.auth.reset_password(tokens[1], "a-brand-new-passphrase")
    assert info.value.field == "token"


async def test_old_device_stops_working_once_the_new_one_is_confirmed(
    app: tuple[App, FakeClock],
) -> None:
    a, clock = app
    old, new = pyotp.random_base32(32), pyotp.random_base32(32)
    uid, email = await user(a, totp_secret=old)
    principal = Principal(uid, "", frozenset({Role.ACCOUNT_ADMINISTRATOR}), "sid")
    pending = {**a.ctx.seal_totp(uid, new), "created_at": clock.now()}
    await a.ctx.users.set_fields(uid, {"totp_pending": pending})  # as ConfirmSetupCode does
    challenge = await a.auth.login(email, PASSWORD)
    await a.auth.verify_second_factor(  # pending: the old device still works
        challenge.challenge_id, totp_code=pyotp.TOTP(old).at(clock.now())
    )
    clock.advance(30)
    await a.auth.change_device(principal, pyotp.TOTP(new).at(clock.now()))
    clock.advance(30)
    challenge = await a.auth.login(email, PASSWORD)
    with pytest.raises(Unauthenticated):
        await a.auth.verify_second_factor(
            challenge.challenge_id, totp_code=pyotp.TOTP(old).at(clock.now())
        )
    session, _ = await a.auth.verify_second_factor(
        challenge.challenge_id, totp_code=pyotp.TOTP(new).at(clock.now())
    )
    assert session.access_token
    stored = await a.ctx.users.get(uid) or {}
    assert stored["totp_pending"] is None
    assert stored["totp"]["kid"] == "uc1"  # sealed with the key id, never in the clear
    assert new.encode() not in repr(stored).encode() and new not in repr(stored)


async def test_recovery_codes_are_hashed_and_regenerable(app: tuple[App, FakeClock]) -> None:
    a, clock = app
    secret = pyotp.random_base32(32)
    uid, email = await user(a, totp_secret=secret)
    principal = Principal(uid, "", frozenset({Role.ACCOUNT_ADMINISTRATOR}), "sid")
    first = await a.auth.regenerate_recovery_codes(principal, PASSWORD)
    assert len(first) == 10 and len(set(first)) == 10
    stored = await a.ctx.users.get(uid) or {}
    assert not set(first) & set(stored["recovery_codes"])  # digests only
    challenge = await a.auth.login(email, PASSWORD)
    _session, left = await a.auth.verify_second_factor(
        challenge.challenge_id, recovery_code=first[0].upper()
    )
    assert left == 9
    second = await a.auth.regenerate_recovery_codes(principal, PASSWORD)
    challenge = await a.auth.login(email, PASSWORD)
    with pytest.raises(Unauthenticated):  # the old set is gone
        await a.auth.verify_second_factor(challenge.challenge_id, recovery_code=first[1])
    _session, left = await a.auth.verify_second_factor(
        challenge.challenge_id, recovery_code=second[0]
    )
    assert left == 9
    with pytest.raises(Unauthenticated):  # wrong password: no new set
        await a.auth.regenerate_recovery_codes(principal, "wrong-password-123")


async def test_emergency_codes_are_on_by_default_and_can_be_switched_off(infra: Infra) -> None:
    assert AuthSettings.model_fields["emergency_codes_enabled"].default is True
    async with make_app(infra, emergency_codes_enabled=False) as (a, clock):
        secret = pyotp.random_base32(32)
        uid, email = await user(a, totp_secret=secret)
        challenge = await a.auth.login(email, PASSWORD)
        with pytest.raises(FailedPrecondition, match="disabled"):
            await a.auth.request_emergency_code(challenge.challenge_id)
        with pytest.raises(FailedPrecondition, match="disabled"):
            await a.auth.verify_second_factor(challenge.challenge_id, emergency_code="12345678")
        principal = Principal(uid, "", frozenset({Role.ACCOUNT_ADMINISTRATOR}), "sid")
        with pytest.raises(FailedPrecondition, match="disabled"):
            await a.auth.disable_two_factor(principal, emergency_code="12345678")
        session, _ = await a.auth.verify_second_factor(  # TOTP still works
            challenge.challenge_id, totp_code=pyotp.TOTP(secret).at(clock.now())
        )
        assert session.access_token


async def test_confirmation_code_is_single_use_attempt_limited_and_expires(
    app: tuple[App, FakeClock], infra: Infra
) -> None:
    a, clock = app
    uid, email = await user(a)
    principal = Principal(uid, "", frozenset({Role.ACCOUNT_ADMINISTRATOR}), "sid")
    kind = NotificationKind.NOTIFICATION_KIND_CONFIRMATION_CODE
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        expires = await a.auth.send_confirmation_email(principal)
        assert expires == clock.now() + timedelta(minutes=10)
        code = (await mail.next(kind, email)).params["code"]
        stored = [d async for d in a.ctx.codes.coll.find({"user_id": uid})]
        assert len(stored) == 1 and code not in repr(stored)  # a keyed digest only
        wrong = "00000000" if code != "00000000" else "11111111"
        for _ in range(5):
            with pytest.raises(InvalidArgument, match="invalid"):
                await a.auth.confirm_setup_code(principal, wrong)
        with pytest.raises(InvalidArgument, match="invalid"):  # attempts spent: even the code
            await a.auth.confirm_setup_code(principal, code)
        clock.advance(60)  # the resend interval
        await a.auth.send_confirmation_email(principal)
        code = (await mail.next(kind, email)).params["code"]
        clock.advance(timedelta(minutes=10))
        with pytest.raises(InvalidArgument, match="expired") as info:
            await a.auth.confirm_setup_code(principal, code)
        assert info.value.field == "confirmation_code"
        await a.auth.send_confirmation_email(principal)
        code = (await mail.next(kind, email)).params["code"]
        prov = await a.auth.confirm_setup_code(principal, code)
        assert prov.uri.startswith("otpauth://totp/")
        with pytest.raises(InvalidArgument, match="invalid"):  # single use
            await a.auth.confirm_setup_code(principal, code)


async def test_email_matches_in_any_case_unicode_form_or_punycode(
    app: tuple[App, FakeClock],
) -> None:
    import unicodedata

    a, _clock = app
    account = await a.accounts.create_account(None, AccountFields(name=unique("Acct ")))
    local = unique("zoë")
    await a.accounts.add_user(
        str(account["_id"]), f"{local}@exämple.com", "", [Role.ANALYST], password=PASSWORD
    )
    for typed in (
        f"{local.upper()}@EXÄMPLE.COM",
        unicodedata.normalize("NFD", f"{local}@exämple.com"),
        f"{local}@xn--exmple-cua.com",
    ):
        assert (await a.auth.login(typed, PASSWORD)).session is not None, typed
    with pytest.raises(AlreadyExists):
        await a.accounts.add_user(
            str(account["_id"]), f"{local.upper()}@xn--exmple-cua.com", "", [Role.ANALYST]
        )


async def test_creating_a_user_does_not_reveal_an_address_of_another_account(
    app: tuple[App, FakeClock], infra: Infra
) -> None:
    """Account B's administrator adds an address that signs in to account A: answered like
    any invitation (no AlreadyExists to probe with); the user is held (it can never sign
    in, no link is sent) and A's user is untouched. The invitee is told why by email."""
    a, _clock = app
    uid_a, email = await user(a)
    account_b = str(
        (await a.accounts.create_account(None, AccountFields(name=unique("B "))))["_id"]
    )
    fresh = f"{unique('fresh')}@example.com"
    async with Mailbox(infra.kafka_bootstrap, a.ctx.events.producer.prefix) as mail:
        invited = await a.accounts.add_user(account_b, fresh, "Ann", [Role.ANALYST])
        held = await a.accounts.add_user(account_b, email.upper(), "Bob", [Role.ANALYST])
        link = await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, fresh)
        notice = await mail.next(NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET, email)
    assert link.params["invite"] == "true" and link.account_id == notice.account_id
    assert dict(notice.params) == {"user_name": "Bob", "invite": "in_use"}
    admin_b = Principal("admin-b", account_b, frozenset({Role.ACCOUNT_ADMINISTRATOR}), "sid")
    listed = {str(u["_id"]): u for u in await a.accounts.list_users(admin_b, account_b)}
    assert set(listed) == {str(invited["_id"]), str(held["_id"])}
    shape = {k for k, v in listed[str(invited["_id"])].items() if v}
    held_only = {k for k, v in listed[str(held["_id"])].items() if v} - shape
    assert held_only == {"email_held", "email_key"}  # the markers, nothing an invite lacks
    # A's user still signs in; the held one never does, not even by a reset
    assert (await a.auth.login(email, PASSWORD)).session is not None
    found = await a.ctx.users.by_email(email.lower())
    assert found is not None and found["_id"] == uid_a
    # the same address twice in one account is a duplicate, held or not
    for address in (email, fresh):
        with pytest.raises(AlreadyExists):
            await a.accounts.add_user(account_b, address, "", [Role.ANALYST])
    # a provider operator (or the operators' bootstrap CLI) sees every account: told plainly
    account_c = str(
        (await a.accounts.create_account(None, AccountFields(name=unique("C "))))["_id"]
    )
    with pytest.raises(AlreadyExists, match="another account"):
        await a.accounts.add_user(  # as the bootstrap CLI calls it
            account_c, email, "", [Role.ANALYST], password=PASSWORD, reveal_conflicts=True
        )
    operator = Principal("op", "", frozenset({Role.PROVIDER_OPERATOR}), "sid")
    with pytest.raises(AlreadyExists, match="another account"):
        await a.accounts.create_user(operator, account_c, email, "", [Role.ANALYST])
    assert await a.accounts.list_users(operator, account_c) == []

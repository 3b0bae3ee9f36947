"""Unit tests of auth's pure domain: passwords, lockout, TOTP, codes, encryption."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from tmsp_auth.domain import codes, totp
from tmsp_auth.domain.crypto import Keyring, KeyringError
from tmsp_auth.domain.lockout import HOURLY_HARD_CAP, LockoutPolicy, LockState
from tmsp_auth.domain.passwords import (
    OWASP_MEMORY_KIB,
    Argon2Params,
    Hasher,
    check_password_policy,
    common_passwords,
)
from tmsp_common.clock import FakeClock
from tmsp_common.errors import InvalidArgument

FAST = Argon2Params(memory_kib=64, time_cost=1)


# -- passwords -------------------------------------------------------------------------


def test_common_password_list_is_shipped_and_large() -> None:
    words = common_passwords()
    assert len(words) > 3000
    assert "password" in words


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-pw", "at least 12"),
        ("x" * 129 + "yz", "at most 128"),
        ("Password1234", "commonly used"),
        ("password123456!", "commonly used"),
        ("123456789012345", "commonly used"),
        ("aaaaaaaaaaaaaaaa", "commonly used|repetitive"),
    ],
)
def test_policy_rejects_weak_passwords_naming_the_field(password: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as info:
        check_password_policy(password, field="new_password")
    assert info.value.field == "new_password"


def test_policy_rejects_the_email_itself_and_accepts_a_passphrase() -> None:
    with pytest.raises(InvalidArgument):
        check_password_policy("alice@example.com", email="Alice@Example.com")
    check_password_policy("correct horse battery staple")
    check_password_policy("ünïcödé-pässwörd")


def test_default_argon2_parameters_meet_owasp() -> None:
    params = Argon2Params()
    assert params.memory_kib >= 19456 == OWASP_MEMORY_KIB
    assert (params.time_cost, params.parallelism) == (2, 1)


def test_hash_is_argon2id_and_verifies() -> None:
    hasher = Hasher(FAST)
    stored = hasher.hash("a long enough passphrase")
    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "a long enough passphrase")
    assert not hasher.verify(stored, "a long enough passphrasE")
    assert not hasher.verify("not-a-hash", "x")


def test_nfkc_normalization_makes_equivalent_input_match() -> None:
    hasher = Hasher(FAST)
    stored = hasher.hash("ﬁne passphrase here")  # U+FB01 ligature
    assert hasher.verify(stored, "fine passphrase here")


def test_changed_parameters_ask_for_a_rehash() -> None:
    old, new = Hasher(FAST), Hasher(Argon2Params(memory_kib=128, time_cost=1))
    stored = old.hash("a long enough passphrase")
    assert not old.needs_rehash(stored)
    assert new.needs_rehash(stored)
    assert new.verify(stored, "a long enough passphrase")  # old hashes still verify


# -- lockout ---------------------------------------------------------------------------


def test_lock_period_grows_and_is_capped() -> None:
    policy = LockoutPolicy(threshold=5, base_period=timedelta(minutes=15))
    assert policy.lock_period(0) == timedelta(minutes=15)
    assert policy.lock_period(1) == timedelta(minutes=30)
    assert policy.lock_period(2) == timedelta(hours=1)
    assert policy.lock_period(40) == timedelta(hours=24)


def test_threshold_never_exceeds_the_hourly_cap() -> None:
    assert LockoutPolicy(threshold=10_000).effective_threshold == HOURLY_HARD_CAP
    assert LockoutPolicy(threshold=0).effective_threshold == 1


def test_lock_state_with_a_fake_clock() -> None:
    clock = FakeClock()
    policy = LockoutPolicy(threshold=3)
    now = clock.now()
    state = LockState(failures=2)
    assert state.can_attempt(policy, now)
    assert not LockState(failures=3).can_attempt(policy, now)
    locked = LockState(locked_until=now + timedelta(minutes=15))
    assert locked.is_locked(now)
    assert locked.retry_after(now) == timedelta(minutes=15)
    later = clock.advance(timedelta(minutes=15))
    assert not locked.is_locked(later)
    assert locked.can_attempt(policy, later)


def test_hourly_cap_blocks_until_the_window_ends() -> None:
    clock = FakeClock()
    start = clock.now()
    state = LockState(window_start=start, window_failures=HOURLY_HARD_CAP)
    policy = LockoutPolicy(threshold=100)
    clock.advance(timedelta(minutes=59))
    assert state.window_full(clock.now())
    assert not state.can_attempt(policy, clock.now())
    assert state.retry_after(clock.now()) == timedelta(minutes=1)
    clock.advance(timedelta(minutes=1))
    assert state.can_attempt(policy, clock.now())


# -- TOTP ------------------------------------------------------------------------------


def test_secret_is_160_bits_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20


def test_code_matches_current_and_adjacent_steps_only() -> None:
    clock = FakeClock()
    secret = totp.new_secret()
    app = pyotp.TOTP(secret)
    code = app.at(clock.now())
    step = totp.time_step(clock.now())
    assert totp.matching_step(secret, code, clock.now()) == step
    clock.advance(30)
    assert totp.matching_step(secret, code, clock.now()) == step  # one step late: accepted
    clock.advance(30)
    assert totp.matching_step(secret, code, clock.now()) is None  # two steps late: rejected
    future = app.at(clock.now() + timedelta(seconds=30))
    assert totp.matching_step(secret, future, clock.now()) == step + 3


def test_codes_just_before_the_window_are_stale_not_invalid() -> None:
    clock = FakeClock()
    secret = totp.new_secret()
    code = pyotp.TOTP(secret).at(clock.now())
    assert not totp.is_stale(secret, code, clock.now())  # current: valid, not stale
    clock.advance(30)
    assert not totp.is_stale(secret, code, clock.now())  # one step late: still accepted
    clock.advance(30)
    assert totp.is_stale(secret, code, clock.now())  # two steps late: expired
    clock.advance(30 * totp.STALE_STEPS)
    assert not totp.is_stale(secret, code, clock.now())  # long gone: just invalid
    assert not totp.is_stale(secret, "000000x", clock.now())


def test_malformed_codes_never_match() -> None:
    clock = FakeClock()
    secret = totp.new_secret()
    for bad in ("", "12345", "1234567", "abcdef", "１２３４５６"):
        assert totp.matching_step(secret, bad, clock.now()) is None


def test_provisioning_uri_has_what_google_authenticator_needs() -> None:
    secret = totp.new_secret()
    prov = totp.provisioning(secret, issuer="TMSP", account_label="alice@example.com")
    parts = urlsplit(prov.uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert "alice%40example.com" in parts.path and parts.path.startswith("/TMSP:")
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["TMSP"]
    assert (query["algorithm"], query["digits"], query["period"]) == (["SHA1"], ["6"], ["30"])
    assert len(base64.b32decode(query["secret"][0])) == 20  # 160 bits
    assert prov.qr_png.startswith(b"\x89PNG")
    assert "<svg" in prov.qr_svg
    parsed = pyotp.parse_uri(prov.uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.digits, parsed.interval) == (6, 30)


# -- codes -----------------------------------------------------------------------------


def test_code_hasher_is_keyed_and_constant_format() -> None:
    a, b = codes.CodeHasher(b"k" * 32), codes.CodeHasher(b"j" * 32)
    assert a.digest("12345678") != b.digest("12345678")
    assert a.matches(a.digest("abcde-fghij"), "ABCDE FGHIJ")
    assert not a.matches(a.digest("12345678"), "12345679")


def test_issued_code_expiry_and_attempts() -> None:
    clock = FakeClock()
    rules = codes.CodeRules()
    issued = codes.IssuedCode(
        user_id="u",
        purpose=codes.CodePurpose.EMERGENCY,
        digest="d",
        created_at=clock.now(),
        expires_at=clock.now() + rules.ttl,
        max_attempts=rules.max_attempts,
    )
    assert issued.usable(clock.now())
    assert not issued.may_resend(clock.now(), rules)
    clock.advance(rules.resend_interval)
    assert issued.may_resend(clock.now(), rules)
    clock.advance(rules.ttl)
    assert not issued.usable(clock.now())
    spent = codes.IssuedCode(
        "u", codes.CodePurpose.EMERGENCY, "d", clock.now(), clock.now() + rules.ttl, attempts=5
    )
    assert not spent.usable(clock.now())


def test_generated_codes_have_the_promised_shape() -> None:
    assert len(codes.numeric_code(8)) == 8 and codes.numeric_code(8).isdigit()
    recovery = codes.recovery_codes(10)
    assert len(set(recovery)) == 10
    assert all(len(c) == 11 and c[5] == "-" for c in recovery)
    assert len(codes.token()) >= 43


# -- encryption at rest ----------------------------------------------------------------


def test_keyring_round_trip_rotation_and_tampering() -> None:
    old = Keyring.parse(Keyring.generate_spec("k1"))
    sealed = old.seal(b"JBSWY3DPEHPK3PXP", "totp:u1")
    assert sealed.kid == "k1"
    assert old.open(sealed, "totp:u1") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(KeyringError):
        old.open(sealed, "totp:u2")  # bound to its user
    spec_k1 = Keyring.generate_spec("k1")
    rotated = Keyring.parse(Keyring.generate_spec("k2") + "," + spec_k1)
    first = Keyring.parse(spec_k1)
    legacy = first.seal(b"secret", "x")
    assert rotated.open(legacy, "x") == b"secret"
    assert rotated.seal(b"secret", "x").kid == "k2"
    assert rotated.derive("pepper") == first.derive("pepper")  # survives rotation
    tampered = type(sealed)(sealed.kid, sealed.nonce, sealed.ciphertext[:-1] + b"\x00")
    with pytest.raises(KeyringError):
        old.open(tampered, "totp:u1")


def test_keyring_rejects_bad_specs() -> None:
    for spec in ("", "nokey", "k1:not-base64!", "k1:" + base64.b64encode(b"short").decode()):
        with pytest.raises(KeyringError):
            Keyring.parse(spec)

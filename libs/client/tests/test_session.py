"""The session file (permissions, round trip, damage) and the refresh decision."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tmsp.auth.v1 import auth_pb2
from tmsp_client.connection import Targets
from tmsp_client.session import (
    REFRESH_MARGIN,
    NotLoggedIn,
    SecondFactor,
    Session,
    SessionStore,
    SignedIn,
)

NOW = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
TARGETS = Targets("127.0.0.1:50051", "127.0.0.1:50055", "127.0.0.1:50054", ".local/tls")


def session(expires: datetime = NOW + timedelta(minutes=5), refresh: str = "rt-1") -> Session:
    return Session(
        email="admin@acme.example",
        user_id="u1",
        account_id="acme",
        session_id="s1",
        access_token="at-1",
        refresh_token=refresh,
        access_token_expires_at=expires,
        targets=TARGETS,
    )


def rotated(n: int, expires: datetime) -> auth_pb2.Session:
    pb = auth_pb2.Session(access_token=f"at-{n}", refresh_token=f"rt-{n}", session_id="s1")
    pb.access_token_expires_at.FromDatetime(expires)
    return pb


def test_saved_session_is_private_and_round_trips(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "cfg" / "tmsp")
    store.save(session())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert store.load() == session()
    assert [p.name for p in store.directory.iterdir()] == ["session.json"]  # no temp left


def test_save_tightens_a_loose_directory_and_an_old_file(tmp_path: Path) -> None:
    directory = tmp_path / "tmsp"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the loose mode under test
    store = SessionStore(directory)
    store.path.write_text("{}")
    os.chmod(store.path, 0o644)
    store.save(session())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_tokens_never_show_in_repr() -> None:
    text = repr(session())
    assert "at-1" not in text and "rt-1" not in text and "admin@acme.example" in text


def test_missing_file_is_no_session_and_a_damaged_one_says_so(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    assert store.load() is None
    assert store.delete() is False
    for bad in ("not json", "{}", '{"email": 1}', session().to_json().replace("+00:00", "")):
        store.path.write_text(bad)
        with pytest.raises(NotLoggedIn, match="unreadable session file"):
            store.load()


@pytest.mark.parametrize(
    ("left", "refresh"),
    [
        (REFRESH_MARGIN + timedelta(seconds=1), False),
        (REFRESH_MARGIN, True),
        (timedelta(seconds=1), True),
        (-timedelta(hours=1), True),
    ],
)
def test_refresh_within_a_minute_of_expiry(left: timedelta, refresh: bool) -> None:
    assert session(NOW + left).needs_refresh(NOW) is refresh


def test_fresh_token_is_used_as_is(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(session())
    calls: list[str] = []

    def refresh(token: str) -> auth_pb2.Session:
        calls.append(token)
        raise AssertionError("no refresh expected")

    signed = SignedIn(store, session(), refresh, now=lambda: NOW)
    assert signed.access_token() == "at-1"
    assert calls == []


def test_expiring_token_is_refreshed_once_and_the_rotation_saved(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(session(NOW + timedelta(seconds=30)))
    calls: list[str] = []

    def refresh(token: str) -> auth_pb2.Session:
        calls.append(token)
        return rotated(2, NOW + timedelta(minutes=5))

    signed = SignedIn(store, session(NOW + timedelta(seconds=30)), refresh, now=lambda: NOW)
    assert signed.access_token() == "at-2"
    assert signed.access_token() == "at-2"
    assert calls == ["rt-1"]
    saved = store.load()
    assert saved is not None
    assert (saved.refresh_token, saved.access_token_expires_at) == (
        "rt-2",
        NOW + timedelta(minutes=5),
    )
    assert saved.email == "admin@acme.example" and saved.targets == TARGETS


def test_a_refresh_another_command_saved_meanwhile_is_not_repeated(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    stale = session(NOW + timedelta(seconds=10))
    store.save(session(NOW + timedelta(minutes=5), refresh="rt-9"))  # the other command's

    def refresh(token: str) -> auth_pb2.Session:
        raise AssertionError(f"spent {token} twice")

    assert SignedIn(store, stale, refresh, now=lambda: NOW).access_token() == "at-1"
    saved = store.load()
    assert saved is not None and saved.refresh_token == "rt-9"


def test_a_session_removed_meanwhile_means_not_logged_in(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    with pytest.raises(NotLoggedIn):
        SignedIn(store, session(NOW), lambda _t: rotated(2, NOW), now=lambda: NOW).access_token()


def test_second_factor_tells_totp_from_recovery_and_emergency_codes() -> None:
    codes = iter(["123456", "ABCD-EFGH-1234", "98765432"])
    second = SecondFactor(lambda _prompt: next(codes))
    assert second.request("c1").totp_code == "123456"
    recovery = second.request("c1")
    assert (recovery.totp_code, recovery.recovery_code) == ("", "ABCD-EFGH-1234")
    emergency = SecondFactor(lambda _prompt: next(codes), emergency=True).request("c1")
    assert (emergency.emergency_code, emergency.challenge_id) == ("98765432", "c1")

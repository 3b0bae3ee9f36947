"""Unit tests of how a reserved login attempt is settled, with fake repositories and bus."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from tmsp_auth.adapters.repositories import Reservation
from tmsp_auth.domain.lockout import LockoutPolicy
from tmsp_auth.service_layer.auth import AuthUseCases
from tmsp_common.clock import FakeClock
from tmsp_common.errors import Unavailable

USER = {"_id": "u1", "account_id": "a1", "email": "u1@example.com", "email_norm": "u1@example.com"}


@dataclass
class FakeUsers:
    threshold: int
    taken: int = 0
    steps: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def reserve_attempt(self, _uid: str, _policy: Any, _now: datetime) -> Reservation:
        self.taken += 1
        return Reservation(self.taken, lockouts=0, window_failures=self.taken, key="k", epoch=0)

    async def lock(self, _uid: str, until: datetime, epoch: int, lockouts: int) -> None:
        self.steps.append(f"lock until {until:%H:%M} epoch {epoch + 1} lockouts {lockouts + 1}")

    async def release_attempt(self, _reservation: Reservation) -> None:
        await self.gate.wait()
        self.steps.append("released")


@dataclass
class FakeEvents:
    down: bool = False
    details: list[str] = field(default_factory=list)

    async def audit(self, _kind: int, **fields: str) -> None:
        if self.down:
            raise Unavailable("the event bus is unavailable; try again")
        self.details.append(fields.get("detail", ""))

    async def notify(self, *_args: object, **_kwargs: object) -> None:
        if self.down:
            raise Unavailable("the event bus is unavailable; try again")

    async def all(self, *calls: Any) -> None:
        await asyncio.gather(*calls)


def use_cases(threshold: int = 3) -> tuple[AuthUseCases, FakeUsers, FakeEvents]:
    users, events = FakeUsers(threshold), FakeEvents()
    ctx = SimpleNamespace(
        users=users,
        events=events,
        clock=FakeClock(),
        config=SimpleNamespace(lockout=LockoutPolicy(threshold=threshold)),
    )
    return AuthUseCases(ctx), users, events  # type: ignore[arg-type]  # fakes


async def test_an_attempt_left_by_a_cancellation_counts_as_a_failure() -> None:
    uc, users, events = use_cases(threshold=1)
    entered = asyncio.Event()

    async def check() -> None:
        async with uc._attempt(USER, kind=1):
            entered.set()
            await asyncio.Event().wait()  # the password check the deadline cuts off

    call = asyncio.create_task(check())
    await entered.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert users.steps == ["lock until 00:15 epoch 1 lockouts 1"]
    assert events.details[0] == "attempt interrupted"


async def test_the_lock_is_stored_before_the_bus_is_asked() -> None:
    uc, users, events = use_cases(threshold=1)
    events.down = True
    with pytest.raises(Unavailable):
        async with uc._attempt(USER, kind=1) as attempt:
            await attempt.failed("wrong password")
    assert users.steps == ["lock until 00:15 epoch 1 lockouts 1"]  # recorded once, locked


async def test_a_settlement_finishes_although_its_caller_is_cancelled() -> None:
    uc, users, _events = use_cases()

    async def check() -> None:
        async with uc._attempt(USER, kind=1) as attempt:
            await attempt.release()

    call = asyncio.create_task(check())
    await asyncio.sleep(0.01)  # inside release_attempt, waiting on the gate
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    users.gate.set()
    await asyncio.sleep(0.01)
    assert users.steps == ["released"]  # released once, not also counted as a failure


def test_the_lease_is_short_and_shorter_than_a_lockout() -> None:
    policy = LockoutPolicy()
    assert policy.attempt_lease == timedelta(minutes=1) < policy.lock_period(0)

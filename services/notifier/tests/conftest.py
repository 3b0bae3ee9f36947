from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tmsp_common.clock import FakeClock
from tmsp_notifier.adapters.memory import (
    MemoryAccounts,
    MemoryAlerts,
    MemoryCounter,
    MemoryDeliveryLog,
    MemoryDigests,
    MemorySettings,
    RecordingDeadLetters,
    RecordingSender,
)
from tmsp_notifier.service_layer.delivery import Deliverer, RetryPolicy
from tmsp_notifier.service_layer.events import EventNotifier
from tmsp_notifier.service_layer.rendering import Renderer

_RENDERER = Renderer("https://portal.example")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 10, 15, tzinfo=UTC))


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def deliverer(clock: FakeClock, sleeps: list[float]) -> Deliverer:
    async def sleep(s: float) -> None:
        sleeps.append(s)

    return Deliverer(
        log=MemoryDeliveryLog(),
        settings=MemorySettings(),
        accounts=MemoryAccounts(),
        counter=MemoryCounter(),
        digests=MemoryDigests(),
        sender=RecordingSender(),
        dead_letters=RecordingDeadLetters(),
        renderer=_RENDERER,
        clock=clock,
        mail_from="TMSP <notify@tmsp.example>",
        retry=RetryPolicy(initial_s=0.5, max_s=4, max_transient_replies=3),
        max_attachment_bytes=1000,
        sleep=sleep,
    )


@pytest.fixture
def sender(deliverer: Deliverer) -> RecordingSender:
    assert isinstance(deliverer.sender, RecordingSender)
    return deliverer.sender


@pytest.fixture
def dead_letters(deliverer: Deliverer) -> RecordingDeadLetters:
    assert isinstance(deliverer.dead_letters, RecordingDeadLetters)
    return deliverer.dead_letters


@pytest.fixture
def events(deliverer: Deliverer) -> EventNotifier:
    return EventNotifier(deliverer, MemoryAlerts())

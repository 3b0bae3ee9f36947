from __future__ import annotations

import asyncio

from tmsp.events.v1 import notifications_pb2
from tmsp.events.v1.envelope_pb2 import Envelope
from tmsp_common.kafka.consumer import ConsumedEvent
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS
from tmsp_notifier.adapters.memory import (
    MemoryDeliveryLog,
    MemorySettings,
    RecordingDeadLetters,
    RecordingSender,
)
from tmsp_notifier.bootstrap import App
from tmsp_notifier.entrypoints.consumers import RequestsHandler
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.events import EventNotifier
from tmsp_notifier.service_layer.settings_admin import SettingsAdmin


def event(
    nid: str, offset: int, kind: int = 1
) -> ConsumedEvent[notifications_pb2.NotificationRequest]:
    req = notifications_pb2.NotificationRequest(
        notification_id=nid,
        kind=kind,  # type: ignore[arg-type]
        account_id="acct",
        recipients=["u@x.example"],
        params={"code": "424242"},
    )
    return ConsumedEvent(
        NOTIFICATION_REQUESTS, 0, offset, nid.encode(), Envelope(event_id=f"e{offset}"), req
    )


async def test_same_id_twice_in_one_batch_is_mailed_once(
    deliverer: Deliverer, sender: RecordingSender, events: EventNotifier
) -> None:
    assert isinstance(deliverer.settings, MemorySettings)
    assert isinstance(deliverer.log, MemoryDeliveryLog)
    app = App(
        deliverer, events, SettingsAdmin(deliverer.settings, deliverer.log, deliverer), sender
    )
    handler = RequestsHandler(app, prefix="", concurrency=4, stop=asyncio.Event())
    dead = deliverer.dead_letters
    assert isinstance(dead, RecordingDeadLetters)
    await handler(
        [
            event("a", 0),
            event("b", 1),
            event("a", 2),
            event("c", 3, kind=0),
            event("", 4),
            event("", 5),
        ]
    )
    assert sorted(str(m["Message-ID"]) for m in sender.sent) == [
        "<a@tmsp.notifier>",
        "<b@tmsp.notifier>",
    ]
    rejected = await deliverer.log.get("c")
    assert rejected is not None and rejected.state == "rejected"
    # two requests without an id: neither is mailed, each is dead-lettered (none vanishes)
    no_id = [o.offset for _, r, o in dead.letters if r.startswith("invalid: notification_id")]
    assert sorted(no_id) == [4, 5]

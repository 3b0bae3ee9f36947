"""Dead letters of notifications, on the NOTIFICATION_REQUESTS dead-letter topic.

The record is an enveloped ``NotificationRequest`` with every parameter value replaced by
``[redacted]`` and attachment contents dropped: a dead letter keeps what is needed to
investigate (id, kind, account, recipients, reason) and never a code or a reset link.
Headers follow the consumer runner's (reason, original topic/partition/offset).
"""

from __future__ import annotations

from tmsp.events.v1 import notifications_pb2
from tmsp_common.kafka.consumer import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from tmsp_common.kafka.envelope import wrap
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS
from tmsp_notifier.adapters.convert import kind_to_proto
from tmsp_notifier.domain.model import Notification
from tmsp_notifier.service_layer.ports import Origin

DLQ_NOTIFICATION_ID = "tmsp-notification-id"
REDACTED = "[redacted]"


def redacted_request(n: Notification) -> notifications_pb2.NotificationRequest:
    return notifications_pb2.NotificationRequest(
        notification_id=n.notification_id[:200],
        kind=kind_to_proto(n.kind),
        account_id=n.account_id,
        recipients=[r[:320] for r in n.recipients],
        params=dict.fromkeys(n.params, REDACTED),
        attachments=[
            notifications_pb2.Attachment(filename=a.filename[:200], content_type=a.content_type)
            for a in n.attachments
        ],
        time_zone=n.time_zone,
    )


class KafkaDeadLetters:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        topic = NOTIFICATION_REQUESTS.dead_letter
        assert topic is not None  # noqa: S101 - the registry declares it
        self.topic_name = topic.qualified(producer.prefix)

    async def publish(self, notification: Notification, reason: str, origin: Origin) -> None:
        env = wrap(
            redacted_request(notification),
            producer=self._producer.service,
            account_id=notification.account_id,
        )
        headers = [
            (DLQ_REASON, reason.encode()[:1000]),
            (DLQ_TOPIC, origin.topic.encode()),
            (DLQ_PARTITION, str(origin.partition).encode()),
            (DLQ_OFFSET, str(origin.offset).encode()),
            (DLQ_NOTIFICATION_ID, notification.notification_id.encode()[:200]),
        ]
        key = notification.notification_id.encode()[:200]
        fut = await self._producer.send_raw(
            self.topic_name, env.SerializeToString(), key=key, headers=headers
        )
        await fut

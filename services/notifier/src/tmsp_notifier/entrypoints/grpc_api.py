"""NotificationSettingsService: proto to command, use case, result to proto."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from tmsp.events.v1 import detections_pb2
from tmsp.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from tmsp_common.authn import current_principal
from tmsp_common.errors import InvalidArgument
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.severity import Severity
from tmsp_notifier.adapters.convert import kind_from_proto, kind_to_proto
from tmsp_notifier.domain.model import DeliveryRecord, Kind, KindSettings
from tmsp_notifier.service_layer.settings_admin import SettingsAdmin, SettingsUpdate

SERVICE_NAME = notifier_pb2.DESCRIPTOR.services_by_name["NotificationSettingsService"].full_name


def _kind(value: int) -> Kind:
    kind = kind_from_proto(value)
    if kind is None:
        raise InvalidArgument("kind", "unknown or unset")
    return kind


def _severity(value: int) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        raise InvalidArgument("min_severity", "unknown severity") from None


def _page_token(token: str) -> tuple[datetime, str]:
    try:
        at, nid = json.loads(base64.urlsafe_b64decode(token.encode()))
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument("page_token", "not a token from a previous page") from None
    if when.tzinfo is None or not isinstance(nid, str):
        raise InvalidArgument("page_token", "not a token from a previous page")
    return when, nid


def settings_to_proto(s: KindSettings) -> notifier_pb2.NotificationSettings:
    return notifier_pb2.NotificationSettings(
        account_id=s.account_id,
        kind=kind_to_proto(s.kind),
        enabled=s.enabled,
        min_severity=detections_pb2.Severity.ValueType(int(s.min_severity)),
        notify_administrator=s.notify_administrator,
        extra_recipients=list(s.extra_recipients),
        max_per_hour=s.max_per_hour,
        digest=s.digest,
        version=s.version,
    )


def entry_to_proto(r: DeliveryRecord) -> notifier_pb2.DeliveryLogEntry:
    entry = notifier_pb2.DeliveryLogEntry(
        notification_id=r.notification_id,
        account_id=r.account_id,
        kind=kind_to_proto(r.kind),
        recipients=list(r.recipients),
        state=notifier_pb2.DeliveryState.Value("DELIVERY_STATE_" + r.state.value.upper()),
        attempts=r.attempts,
        last_reply=r.last_reply,
        subject=r.subject,
        message_id=r.message_id,
    )
    entry.created_at.CopyFrom(to_timestamp(r.created_at))
    entry.updated_at.CopyFrom(to_timestamp(r.updated_at))
    if r.sent_at is not None:
        entry.sent_at.CopyFrom(to_timestamp(r.sent_at))
    return entry


class NotificationSettingsServicer(notifier_pb2_grpc.NotificationSettingsServiceServicer):
    def __init__(self, admin: SettingsAdmin) -> None:
        self.admin = admin

    async def GetNotificationSettings(
        self, request: notifier_pb2.GetNotificationSettingsRequest, context: Any
    ) -> notifier_pb2.GetNotificationSettingsResponse:
        s = await self.admin.get(current_principal(), request.account_id, _kind(request.kind))
        return notifier_pb2.GetNotificationSettingsResponse(settings=settings_to_proto(s))

    async def ListNotificationSettings(
        self, request: notifier_pb2.ListNotificationSettingsRequest, context: Any
    ) -> notifier_pb2.ListNotificationSettingsResponse:
        rows = await self.admin.list_all(current_principal(), request.account_id)
        return notifier_pb2.ListNotificationSettingsResponse(
            settings=[settings_to_proto(s) for s in rows]
        )

    async def UpdateNotificationSettings(
        self, request: notifier_pb2.UpdateNotificationSettingsRequest, context: Any
    ) -> notifier_pb2.UpdateNotificationSettingsResponse:
        s = request.settings
        stored = await self.admin.update(
            current_principal(),
            SettingsUpdate(
                account_id=s.account_id,
                kind=_kind(s.kind),
                enabled=s.enabled,
                min_severity=_severity(s.min_severity),
                notify_administrator=s.notify_administrator,
                extra_recipients=tuple(s.extra_recipients),
                max_per_hour=s.max_per_hour,
                digest=s.digest,
                expected_version=(
                    request.expected_version if request.HasField("expected_version") else None
                ),
            ),
        )
        return notifier_pb2.UpdateNotificationSettingsResponse(settings=settings_to_proto(stored))

    async def ListDeliveries(
        self, request: notifier_pb2.ListDeliveriesRequest, context: Any
    ) -> notifier_pb2.ListDeliveriesResponse:
        after = _page_token(request.page_token) if request.page_token else None
        size = request.page_size or 50
        rows = await self.admin.deliveries(
            current_principal(), request.account_id, limit=size, after=after
        )
        token = ""
        if len(rows) == size:
            token = base64.urlsafe_b64encode(
                json.dumps([rows[-1].created_at.isoformat(), rows[-1].notification_id]).encode()
            ).decode()
        return notifier_pb2.ListDeliveriesResponse(
            entries=[entry_to_proto(r) for r in rows], next_page_token=token
        )

"""Domain events to notifications: incidents, product liveness, nonconforming endpoints,
subscription expiry.

Ids are deterministic (source + recipient set), so a redelivered event, or a periodic task
that runs again, finds the delivery log entry and sends nothing twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from tmsp_common.logging import get_logger
from tmsp_common.severity import Severity
from tmsp_notifier.domain import policy
from tmsp_notifier.domain.model import AccountProfile, Kind, Notification
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.ports import AlertStateRepository

log = get_logger(__name__)


@dataclass(frozen=True)
class IncidentView:
    incident_id: str
    account_id: str
    title: str
    severity: Severity
    first_seen: datetime | None
    last_seen: datetime | None
    event_count: int
    endpoints: tuple[str, ...] = ()
    description: str = ""
    open: bool = True


class Liveness:
    ONLINE: Final = "online"
    OFFLINE: Final = "offline"
    LOGS_NOT_RECEIVED: Final = "logs_not_received"
    LOGS_RESUMED: Final = "logs_resumed"


@dataclass(frozen=True)
class LivenessView:
    product_id: str
    account_id: str
    state: str
    since: datetime | None = None
    last_heartbeat_at: datetime | None = None
    last_upload_at: datetime | None = None


@dataclass(frozen=True)
class NonconformingView:
    account_id: str
    endpoint_key: str
    endpoint: str
    threat_names: tuple[str, ...] = ()
    reason: str = ""
    cleared: bool = False
    since: datetime | None = None
    product_id: str = ""


@dataclass
class EventNotifier:
    """Turns domain events into notifications for the account's recipients."""

    deliverer: Deliverer
    alerts: AlertStateRepository
    reminder_days: tuple[int, ...] = policy.DEFAULT_REMINDER_DAYS
    stop: asyncio.Event | None = field(default=None)

    async def _recipients(
        self, account_id: str, kind: Kind
    ) -> tuple[AccountProfile | None, tuple[str, ...], Severity] | None:
        settings = await self.deliverer.settings_for(account_id, kind)
        if not settings.enabled:
            return None
        account = await self.deliverer.accounts.get(account_id)
        if account is not None and account.deleted:
            return None
        recipients = policy.resolve_recipients(account, settings)
        if not recipients:
            log.warning("no recipient for notification", account_id=account_id, kind=kind.value)
            return None
        return account, recipients, settings.min_severity

    async def on_incident(self, incident: IncidentView, event_id: str) -> None:
        if not incident.open:
            return
        target = await self._recipients(incident.account_id, Kind.INCIDENT)
        if target is None:
            return
        account, recipients, threshold = target
        previous = await self.alerts.incident_severity(incident.incident_id)
        if not policy.should_notify_incident(incident.severity, previous, threshold):
            return
        tz = account.time_zone if account else "UTC"
        nid = policy.derived_id(
            "incident",
            incident.incident_id,
            str(int(incident.severity)),
            policy.recipient_key(recipients),
        )
        severity = incident.severity.name.title()
        await self.deliverer.deliver(
            Notification(
                notification_id=nid,
                kind=Kind.INCIDENT,
                account_id=incident.account_id,
                recipients=recipients,
                params={
                    "incident_id": incident.incident_id,
                    "title": incident.title,
                    "severity": severity,
                    "first_seen": policy.format_local(incident.first_seen, tz),
                    "last_seen": policy.format_local(incident.last_seen, tz),
                    "event_count": str(incident.event_count),
                    "endpoints": ", ".join(incident.endpoints[:20]),
                    "description": incident.description,
                    "escalated": "yes" if previous is not None else "",
                },
                time_zone=tz,
                source="incident",
                source_event_id=event_id,
                throttle=True,
                summary=f"[{severity}] {incident.title} ({incident.incident_id})",
            ),
            stop=self.stop,
        )
        await self.alerts.set_incident_severity(incident.incident_id, incident.severity)

    async def on_liveness(self, view: LivenessView, event_id: str) -> None:
        """Connectivity (online/offline) and log intake (missing/resumed) are separate
        states of a product: offline, then logs not received, then online still mails
        "back online"."""
        if view.state in (Liveness.LOGS_NOT_RECEIVED, Liveness.LOGS_RESUMED):
            key = f"{view.product_id}/logs"
            previous = await self.alerts.product_state(key)
            if view.state == Liveness.LOGS_NOT_RECEIVED and previous != view.state:
                await self._liveness_mail(Kind.LOGS_NOT_RECEIVED, view, event_id)
        else:
            key = view.product_id
            previous = await self.alerts.product_state(key)
            if view.state == Liveness.OFFLINE and previous != Liveness.OFFLINE:
                await self._liveness_mail(Kind.PRODUCT_OFFLINE, view, event_id)
            elif view.state == Liveness.ONLINE and previous == Liveness.OFFLINE:
                await self._liveness_mail(Kind.PRODUCT_ONLINE, view, event_id)
        await self.alerts.set_product_state(key, view.state)

    async def _liveness_mail(self, kind: Kind, view: LivenessView, event_id: str) -> None:
        target = await self._recipients(view.account_id, kind)
        if target is None:
            return
        account, recipients, _ = target
        tz = account.time_zone if account else "UTC"
        await self.deliverer.deliver(
            Notification(
                notification_id=policy.derived_id(
                    kind.value, event_id, policy.recipient_key(recipients)
                ),
                kind=kind,
                account_id=view.account_id,
                recipients=recipients,
                params={
                    "product_id": view.product_id,
                    "since": policy.format_local(view.since, tz),
                    "last_heartbeat_at": policy.format_local(view.last_heartbeat_at, tz),
                    "last_upload_at": policy.format_local(view.last_upload_at, tz),
                },
                time_zone=tz,
                source="product_liveness",
                source_event_id=event_id,
                throttle=True,
                summary=f"{kind.value.replace('_', ' ')}: {view.product_id}",
            ),
            stop=self.stop,
        )

    async def on_nonconforming(self, view: NonconformingView, event_id: str) -> None:
        key = f"{view.account_id}/{view.endpoint_key}"
        if view.cleared:
            await self.alerts.set_endpoint_alert(key, None)
            return
        current = (frozenset(view.threat_names), view.reason)
        previous = await self.alerts.endpoint_alert(key)
        if policy.should_notify_nonconforming(*current, previous):
            await self._nonconforming_mail(view, event_id)
        await self.alerts.set_endpoint_alert(key, current)

    async def _nonconforming_mail(self, view: NonconformingView, event_id: str) -> None:
        target = await self._recipients(view.account_id, Kind.NONCONFORMING_ENDPOINT)
        if target is None:
            return
        account, recipients, _ = target
        tz = account.time_zone if account else "UTC"
        await self.deliverer.deliver(
            Notification(
                notification_id=policy.derived_id(
                    "nonconforming", event_id, policy.recipient_key(recipients)
                ),
                kind=Kind.NONCONFORMING_ENDPOINT,
                account_id=view.account_id,
                recipients=recipients,
                params={
                    "endpoint": view.endpoint or view.endpoint_key,
                    "threat_names": ", ".join(view.threat_names[:20]),
                    "reason": view.reason,
                    "since": policy.format_local(view.since, tz),
                    "product_id": view.product_id,
                },
                time_zone=tz,
                source="nonconforming_endpoint",
                source_event_id=event_id,
                throttle=True,
                summary=f"nonconforming endpoint {view.endpoint or view.endpoint_key}",
            ),
            stop=self.stop,
        )

    async def check_subscriptions(self) -> int:
        """Send the subscription reminders due now; each is sent once. Returns how many due."""
        now = self.deliverer.clock.now()
        due = 0
        for account in await self.deliverer.accounts.all():
            reminder = policy.due_reminder(account, now, self.reminder_days)
            if reminder is None or account.valid_until is None:
                continue
            target = await self._recipients(account.account_id, Kind.SUBSCRIPTION_EXPIRING)
            if target is None:
                continue
            _, recipients, _ = target
            due += 1
            days_left = max(1, -(-int((account.valid_until - now).total_seconds()) // 86400))
            await self.deliverer.deliver(
                Notification(
                    notification_id=reminder.notification_id,
                    kind=Kind.SUBSCRIPTION_EXPIRING,
                    account_id=account.account_id,
                    recipients=recipients,
                    params={
                        "valid_until": policy.format_local(account.valid_until, account.time_zone),
                        "days_left": str(days_left),
                    },
                    time_zone=account.time_zone,
                    source="subscription",
                    summary=f"subscription expires in {days_left} days",
                ),
                stop=self.stop,
            )
        return due

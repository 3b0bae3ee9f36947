"""Deliver one notification: at most one mail per id, none lost.

The delivery log is written before and after every attempt:

1. ``claim``: the record exists (state queued) before anything else happens; a redelivered
   notification finds it, and a final state (sent, failed, digested...) ends there.
2. ``mark_sending`` (attempts+1) *before* the mail goes out, the server's reply after.
3. A crash between the server's 250 and ``mark(SENT)`` leaves state ``sending``: the next
   delivery sends again, with the same Message-ID (``<id@tmsp.notifier>``), so the one
   window SMTP cannot close yields a recognisable duplicate, never a lost mail.

Connection errors are retried with backoff until they clear (or the service stops: the
request is then redelivered after restart); 4xx replies are retried up to a bound; 5xx
replies (and 4xx past the bound) are recorded as failed and dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from tmsp_common.clock import Clock
from tmsp_common.errors import InvalidArgument
from tmsp_common.logging import get_logger
from tmsp_notifier.domain import policy
from tmsp_notifier.domain.model import (
    DeliveryRecord,
    DeliveryState,
    Kind,
    KindSettings,
    Notification,
)
from tmsp_notifier.domain.validation import (
    DEFAULT_MAX_ATTACHMENT_BYTES,
    validate_attachments,
    validate_notification_id,
    validate_recipients,
)
from tmsp_notifier.service_layer import metrics
from tmsp_notifier.service_layer.compose import compose
from tmsp_notifier.service_layer.ports import (
    AccountRepository,
    DeadLetters,
    DeliveryLog,
    DigestItem,
    DigestRepository,
    MailSender,
    Origin,
    PermanentSendError,
    SettingsRepository,
    ThrottleCounter,
    TransientSendError,
)
from tmsp_notifier.service_layer.rendering import Renderer

log = get_logger(__name__)


class DeliveryInterrupted(Exception):
    """The service is stopping while a mail still waits for a retry; it is redelivered."""


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    max_transient_replies: int = 8
    """4xx replies tolerated before the mail is failed and dead-lettered."""

    def backoff(self, attempt: int) -> float:
        return float(min(self.initial_s * 2 ** max(attempt - 1, 0), self.max_s))


Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Deliverer:
    """The delivery use case, shared by every consumer and the periodic tasks."""

    log: DeliveryLog
    settings: SettingsRepository
    accounts: AccountRepository
    counter: ThrottleCounter
    digests: DigestRepository
    sender: MailSender
    dead_letters: DeadLetters
    renderer: Renderer
    clock: Clock
    mail_from: str
    retry: RetryPolicy = RetryPolicy()
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    sleep: Sleep = asyncio.sleep

    async def settings_for(self, account_id: str, kind: Kind) -> KindSettings:
        stored = await self.settings.get(account_id, kind) if kind.configurable else None
        return stored or KindSettings.default(account_id, kind)

    async def deliver(
        self,
        notification: Notification,
        *,
        origin: Origin | None = None,
        stop: asyncio.Event | None = None,
    ) -> DeliveryRecord:
        """Send ``notification`` once; returns its final delivery log record.

        Raises :class:`DeliveryInterrupted` when ``stop`` is set during retries (nothing is
        lost: the caller does not commit, the request comes back).
        """
        now = self.clock.now()
        origin = origin or Origin()
        try:
            n = self._validated(notification)
            account = await self.accounts.get(n.account_id)
            tz = n.time_zone or (account.time_zone if account else "UTC")
            params = n.params
            if n.attachments and n.kind == Kind.REPORT_READY:
                params = {**params, "attached": "yes"}  # the template says what it carries
            rendered = self.renderer.render(
                n.kind,
                params,
                time_zone=tz,
                account_name=account.name if account else "",
                items=list(n.items),
            )
        except InvalidArgument as exc:
            return await self.reject(notification, exc.message, origin)
        # Common path: one insert records the first attempt (state=sending, attempts=1)
        # before the mail goes out; throttled kinds are recorded queued until decided.
        first = DeliveryState.QUEUED if n.throttle else DeliveryState.SENDING
        record, inserted = await self.log.claim(
            DeliveryRecord(
                notification_id=n.notification_id,
                account_id=n.account_id,
                kind=n.kind,
                recipients=n.recipients,
                state=first,
                created_at=now,
                updated_at=now,
                subject=rendered.subject,
                attempts=0 if n.throttle else 1,
                source=n.source,
                source_event_id=n.source_event_id,
                summary=n.summary or rendered.subject,
                message_id=policy.message_id(n.notification_id),
            )
        )
        if record.state.final:
            metrics.EMAILS_DUPLICATES.inc()
            return record
        if n.throttle:
            held = await self._throttle(n, record)
            if held is not None:
                return held
        message = compose(
            notification_id=n.notification_id,
            sender=self.mail_from,
            recipients=n.recipients,
            email=rendered,
            now=now,
            attachments=n.attachments,
        )
        transient_replies = 0
        attempt = 0
        sending: DeliveryRecord | None = record if inserted and not n.throttle else None
        while True:
            if sending is None:
                sending = await self.log.mark_sending(n.notification_id, self.clock.now())
                if sending is None:  # another consumer finished it meanwhile
                    metrics.EMAILS_DUPLICATES.inc()
                    return await self._get(n.notification_id)
            attempt += 1
            started = time.perf_counter()
            try:
                reply = await self.sender.send(message)
            except PermanentSendError as exc:
                return await self._fail(n, exc.reply, origin)
            except TransientSendError as exc:
                cause = "connection" if exc.connection else "4xx"
                if not exc.connection:
                    transient_replies += 1
                    if transient_replies >= self.retry.max_transient_replies:
                        return await self._fail(
                            n, f"gave up after {transient_replies} replies: {exc.reply}", origin
                        )
                metrics.EMAILS_RETRIED.labels(n.kind.value, cause).inc()
                await self.log.mark(
                    n.notification_id, DeliveryState.RETRYING, self.clock.now(), reply=exc.reply
                )
                delay = self.retry.backoff(attempt)
                log.warning(
                    "send failed; retrying",
                    notification_id=n.notification_id,
                    kind=n.kind.value,
                    cause=cause,
                    reply=exc.reply[:200],
                    retry_in_s=delay,
                )
                if stop is not None and stop.is_set():
                    raise DeliveryInterrupted(n.notification_id) from exc
                await self.sleep(delay)
                sending = None
                continue
            metrics.SEND_SECONDS.observe(time.perf_counter() - started)
            metrics.EMAILS_SENT.labels(n.kind.value).inc()
            done = self.clock.now()
            await self.log.mark(n.notification_id, DeliveryState.SENT, done, reply=reply)
            log.info(
                "mail sent",
                notification_id=n.notification_id,
                kind=n.kind.value,
                account_id=n.account_id,
                recipients=len(n.recipients),
                attempts=sending.attempts,
            )
            return replace(
                sending, state=DeliveryState.SENT, updated_at=done, sent_at=done, last_reply=reply
            )

    async def deliver_request(
        self,
        notification: Notification,
        *,
        origin: Origin | None = None,
        stop: asyncio.Event | None = None,
    ) -> DeliveryRecord:
        """A request from another service (auth, reporter).

        Without explicit recipients it goes to the account's recipients for its kind (the
        product administrator plus the extra recipients); a configurable kind the account
        switched off is recorded ``skipped`` and not sent.
        """
        n = notification
        try:
            validate_notification_id(n.notification_id)
        except InvalidArgument:
            return await self.deliver(n, origin=origin, stop=stop)  # rejects it
        if n.kind.configurable and n.account_id:
            settings = await self.settings_for(n.account_id, n.kind)
            if not settings.enabled:
                return await self._skip(n, "disabled in the account's notification settings")
            if not n.recipients:
                account = await self.accounts.get(n.account_id)
                n = replace(n, recipients=policy.resolve_recipients(account, settings))
        return await self.deliver(n, origin=origin, stop=stop)

    async def _skip(self, n: Notification, reason: str) -> DeliveryRecord:
        now = self.clock.now()
        stored, _ = await self.log.claim(
            DeliveryRecord(
                notification_id=n.notification_id,
                account_id=n.account_id,
                kind=n.kind,
                recipients=(),
                state=DeliveryState.SKIPPED,
                created_at=now,
                updated_at=now,
                last_reply=reason,
                source=n.source,
                source_event_id=n.source_event_id,
            )
        )
        return stored

    def _validated(self, n: Notification) -> Notification:
        validate_notification_id(n.notification_id)
        if n.kind == Kind.DIGEST and n.source == "request":
            raise InvalidArgument("kind", "digests are made by the notifier only")
        if not n.account_id and not n.kind.is_security:
            raise InvalidArgument("account_id", "required")
        recipients = validate_recipients(n.recipients)
        if not recipients:
            raise InvalidArgument("recipients", "no recipient")
        attachments = validate_attachments(n.attachments, self.max_attachment_bytes)
        return replace(n, recipients=recipients, attachments=attachments)

    async def _throttle(self, n: Notification, record: DeliveryRecord) -> DeliveryRecord | None:
        settings = await self.settings_for(n.account_id, n.kind)
        if not record.decision:
            start = policy.window_start(self.clock.now())
            count = await self.counter.increment(n.account_id, n.kind, start)
            decision = policy.throttle_decision(count, settings)
            record = await self.log.set_decision(
                n.notification_id, decision.value, start, self.clock.now()
            )
        if record.decision == policy.Decision.SEND.value:
            return None
        assert record.window_start is not None  # noqa: S101 - set together with decision
        if record.decision == policy.Decision.DIGEST.value:
            await self.digests.add(
                DigestItem(
                    n.notification_id, n.account_id, n.kind, record.window_start, record.summary
                )
            )
            metrics.EMAILS_DIGESTED.labels(n.kind.value).inc()
            await self.log.mark(n.notification_id, DeliveryState.DIGESTED, self.clock.now())
        else:
            await self.log.mark(n.notification_id, DeliveryState.DROPPED, self.clock.now())
        return await self._get(n.notification_id)

    async def _fail(self, n: Notification, reply: str, origin: Origin) -> DeliveryRecord:
        metrics.EMAILS_FAILED.labels(n.kind.value).inc()
        await self.log.mark(n.notification_id, DeliveryState.FAILED, self.clock.now(), reply=reply)
        await self.dead_letters.publish(n, f"smtp: {reply}", origin)
        log.error(
            "mail refused; dead-lettered",
            notification_id=n.notification_id,
            kind=n.kind.value,
            reply=reply[:200],
        )
        return await self._get(n.notification_id)

    async def reject(self, n: Notification, reason: str, origin: Origin) -> DeliveryRecord:
        """Invalid request: recorded (without parameters) and dead-lettered, never sent."""
        if n.notification_id:
            existing = await self.log.get(n.notification_id[:200])
            if existing is not None and existing.state == DeliveryState.REJECTED:
                return existing
        metrics.EMAILS_REJECTED.labels(reason.split(":")[0][:40]).inc()
        now = self.clock.now()
        await self.dead_letters.publish(n, f"invalid: {reason}", origin)
        log.warning("notification rejected", notification_id=n.notification_id[:128], reason=reason)
        record = DeliveryRecord(
            notification_id=n.notification_id[:200],
            account_id=n.account_id,
            kind=n.kind,
            recipients=(),
            state=DeliveryState.REJECTED,
            created_at=now,
            updated_at=now,
            last_reply=reason[:500],
            source=n.source,
            source_event_id=n.source_event_id,
        )
        if n.notification_id:
            stored, _ = await self.log.claim(record)
            return stored
        return record

    async def _get(self, notification_id: str) -> DeliveryRecord:
        record = await self.log.get(notification_id)
        assert record is not None  # noqa: S101 - claimed before
        return record

    async def flush_digests(self, stop: asyncio.Event | None = None) -> int:
        """Send one digest per (account, kind, window) whose window closed; returns the count."""
        items = await self.digests.due(self.clock.now())
        groups: dict[tuple[str, Kind, datetime], list[DigestItem]] = {}
        for item in items:
            groups.setdefault((item.account_id, item.kind, item.window_start), []).append(item)
        sent = 0
        for (account_id, kind, start), group in sorted(groups.items(), key=lambda kv: kv[0][2]):
            account = await self.accounts.get(account_id)
            settings = await self.settings_for(account_id, kind)
            recipients = policy.resolve_recipients(account, settings)
            tz = account.time_zone if account else "UTC"
            if recipients:
                await self.deliver(
                    Notification(
                        notification_id=policy.digest_id(account_id, kind, start),
                        kind=Kind.DIGEST,
                        account_id=account_id,
                        recipients=recipients,
                        params={
                            "kind_label": kind.value.replace("_", " "),
                            "limit": str(settings.max_per_hour),
                            "window_from": policy.format_local(start, tz),
                            "window_to": policy.format_local(start + policy.THROTTLE_WINDOW, tz),
                        },
                        time_zone=tz,
                        source="digest",
                        items=tuple(i.summary for i in sorted(group, key=lambda i: i.summary)),
                        summary=f"digest of {len(group)} {kind.value} notifications",
                    ),
                    stop=stop,
                )
                sent += 1
            await self.digests.mark_flushed([i.notification_id for i in group])
        return sent

"""The one place that builds adapters and wires them to the use cases."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.clock import Clock, SystemClock
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.mongo import Document
from tmsp_notifier.adapters.dead_letters import KafkaDeadLetters
from tmsp_notifier.adapters.mongo import (
    MongoAccounts,
    MongoAlerts,
    MongoCounter,
    MongoDeliveryLog,
    MongoDigests,
    MongoSettings,
)
from tmsp_notifier.adapters.smtp import SmtpConfig, SmtpSender
from tmsp_notifier.config import NotifierSettings
from tmsp_notifier.service_layer.delivery import Deliverer, RetryPolicy
from tmsp_notifier.service_layer.events import EventNotifier
from tmsp_notifier.service_layer.ports import MailSender
from tmsp_notifier.service_layer.rendering import Renderer
from tmsp_notifier.service_layer.settings_admin import SettingsAdmin


@dataclass
class App:
    deliverer: Deliverer
    events: EventNotifier
    admin: SettingsAdmin
    sender: MailSender


def smtp_config(settings: NotifierSettings) -> SmtpConfig:
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value(),
        timeout_s=settings.smtp_timeout_s,
        validate_certs=settings.smtp_validate_certs,
        ca_file=settings.smtp_ca_file,
        connections=settings.smtp_connections,
    )


def build(
    settings: NotifierSettings,
    db: AsyncDatabase[Document],
    producer: EventProducer,
    *,
    clock: Clock | None = None,
    sender: MailSender | None = None,
) -> App:
    log = MongoDeliveryLog(db)
    repo = MongoSettings(db)
    deliverer = Deliverer(
        log=log,
        settings=repo,
        accounts=MongoAccounts(db),
        counter=MongoCounter(db),
        digests=MongoDigests(db),
        sender=sender or SmtpSender(smtp_config(settings)),
        dead_letters=KafkaDeadLetters(producer),
        renderer=Renderer(settings.portal_url),
        clock=clock or SystemClock(),
        mail_from=settings.mail_from,
        retry=RetryPolicy(
            initial_s=settings.retry_initial_s,
            max_s=settings.retry_max_s,
            max_transient_replies=settings.retry_max_transient_replies,
        ),
        max_attachment_bytes=settings.max_attachment_bytes,
    )
    events = EventNotifier(deliverer, MongoAlerts(db), reminder_days=settings.reminder_days())
    return App(
        deliverer=deliverer,
        events=events,
        admin=SettingsAdmin(repo, log, deliverer),
        sender=deliverer.sender,
    )

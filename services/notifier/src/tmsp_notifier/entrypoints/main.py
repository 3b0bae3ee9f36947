"""``tmsp-notifier``: consumers, periodic digest and subscription checks, the settings API.

Order: logging, settings (exit 2), MongoDB and Kafka (exit 3 naming the URL), topics,
build, serve; on SIGTERM: health NOT_SERVING, consumers finish the batch in hand and
commit, periodic tasks stop, producer flushed, clients closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tmsp.notifier.v1 import notifier_pb2_grpc
from tmsp_common.auth_keys import token_verifier
from tmsp_common.grpc_server import GrpcConfig, GrpcServer
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import BatchHandler, ConsumerRunner
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import (
    ACCOUNTS,
    INCIDENTS,
    NONCONFORMING_ENDPOINTS,
    NOTIFICATION_REQUESTS,
    PRODUCT_LIVENESS,
    Topic,
)
from tmsp_common.lifecycle import every, run_service, supervise
from tmsp_common.logging import get_logger
from tmsp_common.metrics import start_metrics_server
from tmsp_common.mongo import close, connect
from tmsp_notifier import bootstrap
from tmsp_notifier.adapters.mongo import create_indexes
from tmsp_notifier.adapters.smtp import SmtpSender
from tmsp_notifier.config import NotifierSettings
from tmsp_notifier.entrypoints.consumers import (
    AccountsHandler,
    DomainEventsHandler,
    RequestsHandler,
)
from tmsp_notifier.entrypoints.grpc_api import SERVICE_NAME, NotificationSettingsServicer

log = get_logger(__name__)

CONSUMED = (NOTIFICATION_REQUESTS, INCIDENTS, PRODUCT_LIVENESS, NONCONFORMING_ENDPOINTS, ACCOUNTS)


async def serve(settings: NotifierSettings, stop: asyncio.Event) -> None:
    start_metrics_server(settings.metrics_port)
    db = await connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    producer = EventProducer(
        settings.kafka_bootstrap, service="notifier", topic_prefix=settings.topic_prefix
    )
    try:
        await create_indexes(db)
        await ensure_topics(settings.kafka_bootstrap, CONSUMED, prefix=settings.topic_prefix)
        await producer.start()
        app = bootstrap.build(settings, db, producer)
        app.events.stop = stop
        servicer = NotificationSettingsServicer(app.admin)
        server = GrpcServer(
            GrpcConfig(port=settings.grpc_port, tls=settings.grpc_tls, tls_dir=settings.tls_dir),
            registrars=[
                lambda s: notifier_pb2_grpc.add_NotificationSettingsServiceServicer_to_server(
                    servicer, s
                )
            ],
            service_names=[SERVICE_NAME],
            verifier=token_verifier(
                settings.public_keys(),
                settings.auth_target,
                tls=settings.auth_tls,
                tls_dir=settings.tls_dir,
            ),
        )

        def runner(
            name: str, topics: Sequence[Topic], handler: BatchHandler, batch_size: int = 500
        ) -> ConsumerRunner:
            return ConsumerRunner(
                bootstrap=settings.kafka_bootstrap,
                group_id=f"{settings.consumer_group}.{name}",
                topics=topics,
                handler=handler,
                dead_letters=producer,
                topic_prefix=settings.topic_prefix,
                batch_size=batch_size,
            )

        consumers = [
            runner(
                "requests",
                [NOTIFICATION_REQUESTS],
                RequestsHandler(
                    app,
                    prefix=settings.topic_prefix,
                    concurrency=settings.delivery_concurrency,
                    stop=stop,
                ),
                batch_size=64,
            ),
            runner("accounts", [ACCOUNTS], AccountsHandler(app)),
            runner(
                "events",
                [INCIDENTS, PRODUCT_LIVENESS, NONCONFORMING_ENDPOINTS],
                DomainEventsHandler(app),
                batch_size=100,
            ),
        ]
        port = await server.start()
        tasks = [asyncio.create_task(c.run(stop), name=c.group_id) for c in consumers]
        tasks.append(
            asyncio.create_task(
                every(
                    settings.digest_interval_s,
                    lambda: app.deliverer.flush_digests(stop),
                    stop,
                    "digests",
                )
            )
        )
        tasks.append(
            asyncio.create_task(
                every(
                    settings.subscription_check_interval_s,
                    app.events.check_subscriptions,
                    stop,
                    "subscriptions",
                )
            )
        )
        log.info("service ready", grpc_port=port, smtp=f"{settings.smtp_host}:{settings.smtp_port}")
        try:
            await supervise(tasks, stop, server.drain)
        finally:
            if isinstance(app.sender, SmtpSender):
                await app.sender.close()
    finally:
        await producer.stop()
        await close(db)


def main() -> None:
    run_service(NotifierSettings, serve)


if __name__ == "__main__":
    main()

"""``python -m tmsp_auth``: the auth gRPC service.

Order: logging, settings (exit 2), MongoDB and Kafka (exit 3 naming the URL), topics,
build, serve; on SIGTERM: health NOT_SERVING, drain in-flight calls, flush, close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tmsp.auth.v1 import auth_pb2_grpc
from tmsp_auth.bootstrap import build
from tmsp_auth.config import AuthSettings
from tmsp_auth.entrypoints.grpc_api import (
    PUBLIC_METHODS,
    AccountServicer,
    AuthServicer,
    service_names,
)
from tmsp_auth.service_layer.security_events import SecurityEvents, event_document
from tmsp_common import mongo
from tmsp_common.grpc_server import GrpcConfig, GrpcServer
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import ConsumedEvent, ConsumerRunner
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import ACCOUNTS, AUTH_AUDIT, NOTIFICATION_REQUESTS
from tmsp_common.lifecycle import every, run_service, supervise
from tmsp_common.logging import get_logger
from tmsp_common.metrics import start_metrics_server

log = get_logger(__name__)
TOPICS = [ACCOUNTS, AUTH_AUDIT, NOTIFICATION_REQUESTS]
PURGE_INTERVAL_S = 3600.0


def security_events_handler(events: SecurityEvents) -> Any:
    """Store a batch of auth's own audit events (each once) for ``ListSecurityEvents``."""

    async def handle(batch: list[ConsumedEvent[Any]]) -> None:
        docs = [event_document(e.envelope, e.payload) for e in batch]
        await events.record([d for d in docs if d is not None])

    return handle


async def serve(settings: AuthSettings, stop: asyncio.Event) -> None:
    db = await mongo.connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    await ensure_topics(settings.kafka_bootstrap, TOPICS, prefix=settings.topic_prefix)
    producer = EventProducer(
        settings.kafka_bootstrap, service="auth", topic_prefix=settings.topic_prefix
    )
    await producer.start()
    try:
        app = await build(settings, db, producer)
        # Re-publish every account snapshot: the compacted topic converges even if a
        # publication was lost between a write and its acknowledgement.
        for doc in await app.ctx.accounts.all_including_deleted():
            await app.ctx.events.account_changed(doc)
        if settings.metrics_port:
            start_metrics_server(settings.metrics_port)
        auth_servicer, account_servicer = AuthServicer(app), AccountServicer(app)
        server = GrpcServer(
            GrpcConfig(
                host=settings.grpc_host,
                port=settings.grpc_port,
                tls=settings.grpc_tls,
                tls_dir=settings.tls_dir,
            ),
            registrars=[
                lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(auth_servicer, s),
                lambda s: auth_pb2_grpc.add_AccountServiceServicer_to_server(account_servicer, s),
            ],
            service_names=service_names(),
            verifier=app.verifier,
            public_methods=PUBLIC_METHODS,
        )
        recorder = ConsumerRunner(
            bootstrap=settings.kafka_bootstrap,
            group_id=settings.security_events_group,
            topics=[AUTH_AUDIT],
            handler=security_events_handler(app.security_events),
            dead_letters=producer,
            topic_prefix=settings.topic_prefix,
        )
        tasks = [
            asyncio.create_task(recorder.run(stop), name="security-events"),
            asyncio.create_task(
                every(PURGE_INTERVAL_S, app.security_events.purge, stop, "security event purge"),
                name="security-event-purge",
            ),
        ]
        port = await server.start()
        log.info("service ready", port=port, tls=settings.grpc_tls)
        await supervise(tasks, stop, server.drain)
    finally:
        await producer.stop()
        await mongo.close(db)


def main() -> None:
    run_service(AuthSettings, serve)


if __name__ == "__main__":
    main()

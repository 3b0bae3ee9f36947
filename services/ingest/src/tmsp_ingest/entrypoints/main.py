"""``tmsp-ingest``: the product gateway.

Serves, in one process: the admin gRPC API (product registry), the SFTP log server, the
HTTPS log server, syslog over TLS, and the HTTPS status server; consumes the accounts
projection, mitigation tasks and cleanup patterns. Order: logging, settings, dependencies,
topics, build, serve; on SIGTERM: health NOT_SERVING, stop accepting, finish in-flight
uploads, flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import ssl
from concurrent.futures import ProcessPoolExecutor

from tmsp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tmsp_common import mongo
from tmsp_common.grpc_server import GrpcConfig, GrpcServer
from tmsp_common.kafka import topics
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import BatchHandler, ConsumerRunner
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import Topic
from tmsp_common.lifecycle import run_service
from tmsp_common.logging import get_logger
from tmsp_common.metrics import start_metrics_server
from tmsp_common.tls import ensure_server_certificate
from tmsp_ingest.adapters.http_servers import log_server_app, start_https, status_server_app
from tmsp_ingest.adapters.mongo_repos import ensure_indexes
from tmsp_ingest.adapters.sftp_server import start_sftp
from tmsp_ingest.adapters.syslog_tls import SyslogTlsServer, server_context
from tmsp_ingest.bootstrap import build, verifier
from tmsp_ingest.config import IngestSettings
from tmsp_ingest.entrypoints.consumers import accounts_handler, patterns_handler, tasks_handler
from tmsp_ingest.entrypoints.grpc_api import ProductRegistryServicer

log = get_logger(__name__)

PRODUCED = (
    topics.PRODUCTS,
    topics.DETECTIONS,
    topics.MITIGATION_RESULTS,
    topics.INGEST_REJECTED,
    topics.HEARTBEATS,
    topics.UPLOADS,
    topics.FORENSIC_DATA,
)
CONSUMED = (topics.ACCOUNTS, topics.MITIGATION_TASKS, topics.CLEANUP_PATTERNS)


async def serve(settings: IngestSettings, stop: asyncio.Event) -> None:
    db = await mongo.connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    await ensure_indexes(db)
    await ensure_topics(
        settings.kafka_bootstrap, [*PRODUCED, *CONSUMED], prefix=settings.topic_prefix
    )
    producer = EventProducer(
        settings.kafka_bootstrap,
        service="ingest",
        topic_prefix=settings.topic_prefix,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=10,
    )
    await producer.start()
    executor = (
        ProcessPoolExecutor(settings.parse_workers, mp_context=multiprocessing.get_context("spawn"))
        if settings.parse_workers
        else None
    )
    parts = build(settings, db, producer, executor=executor)
    gateway = parts.gateway

    token_verifier = verifier(settings)
    with contextlib.suppress(Exception):  # auth may start later; keys refresh on demand
        await token_verifier.refresh()
    grpc_server = GrpcServer(
        GrpcConfig(
            host=settings.bind_host,
            port=settings.grpc_port,
            tls=settings.grpc_tls,
            tls_dir=settings.tls_dir,
            cert_name="ingest-grpc",
        ),
        registrars=[
            lambda s: ingest_pb2_grpc.add_ProductRegistryServiceServicer_to_server(
                ProductRegistryServicer(parts.registry), s
            )
        ],
        service_names=[ingest_pb2.DESCRIPTOR.services_by_name["ProductRegistryService"].full_name],
        verifier=token_verifier,
    )
    consumed: list[tuple[str, Topic, BatchHandler, int]] = [
        (settings.accounts_group, topics.ACCOUNTS, accounts_handler(parts.accounts), 500),
        (
            settings.tasks_group,
            topics.MITIGATION_TASKS,
            tasks_handler(parts.tasks, parts.registry.products),
            500,
        ),
        # up to 512 KiB each: small batches keep the records in hand bounded
        (settings.patterns_group, topics.CLEANUP_PATTERNS, patterns_handler(parts.patterns), 20),
    ]
    runners = [
        ConsumerRunner(
            bootstrap=settings.kafka_bootstrap,
            group_id=group,
            topics=[topic],
            handler=handler,
            dead_letters=producer,
            topic_prefix=settings.topic_prefix,
            batch_size=batch_size,
        )
        for group, topic, handler, batch_size in consumed
    ]
    consumer_stop = asyncio.Event()
    consumer_tasks = [asyncio.create_task(r.run(consumer_stop)) for r in runners]

    cert = ensure_server_certificate(
        settings.tls_dir, "ingest", hosts=("localhost", "127.0.0.1", "::1", "ingest")
    )
    https_context = server_context(str(cert.cert), str(cert.key), str(cert.ca))
    https_context.verify_mode = ssl.CERT_NONE  # HTTP Basic, no client certificate
    syslog_context = server_context(str(cert.cert), str(cert.key), str(cert.ca))

    grpc_port = await grpc_server.start()
    sftp, sftp_port = await start_sftp(
        gateway, settings.bind_host, settings.sftp_port, settings.data_dir
    )
    log_runner, https_port = await start_https(
        log_server_app(gateway), settings.bind_host, settings.https_port, https_context
    )
    status_runner, status_port = await start_https(
        status_server_app(gateway), settings.bind_host, settings.status_port, https_context
    )
    syslog = SyslogTlsServer(
        gateway,
        max_frame=settings.max_syslog_frame_bytes,
        batch_lines=settings.syslog_batch_lines,
        batch_seconds=settings.syslog_batch_seconds,
        recheck_seconds=settings.syslog_standing_recheck_seconds,
    )
    syslog_server = await asyncio.start_server(
        syslog.handle, settings.bind_host, settings.syslog_tls_port, ssl=syslog_context
    )
    start_metrics_server(settings.metrics_port, settings.bind_host)
    log.info(
        "service ready",
        grpc_port=grpc_port,
        sftp_port=sftp_port,
        https_port=https_port,
        status_port=status_port,
        syslog_tls_port=settings.syslog_tls_port,
    )

    stopped = asyncio.create_task(stop.wait())
    crashed = asyncio.ensure_future(
        asyncio.wait(consumer_tasks, return_when=asyncio.FIRST_COMPLETED)
    )
    await asyncio.wait({stopped, crashed}, return_when=asyncio.FIRST_COMPLETED)
    if crashed.done():
        log.error("a consumer stopped; shutting down")
    log.info("draining")
    sftp.close()
    syslog_server.close()
    await grpc_server.drain()
    await log_runner.cleanup()
    await status_runner.cleanup()
    await sftp.wait_closed()
    await syslog_server.wait_closed()
    if syslog.sessions:  # streams get a moment to flush their last batch
        await asyncio.wait(list(syslog.sessions), timeout=settings.syslog_batch_seconds * 4)
    await gateway.intake.drain(settings.ack_timeout_seconds)
    consumer_stop.set()
    await asyncio.gather(*consumer_tasks, return_exceptions=True)
    crashed.cancel()
    await producer.stop()
    if executor is not None:
        executor.shutdown(cancel_futures=True)
    await mongo.close(db)


def main() -> None:
    run_service(IngestSettings, serve)

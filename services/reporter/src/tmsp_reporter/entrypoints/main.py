"""``tmsp-reporter``: the read-model consumers, the ReporterService API, scheduled reports
and log maintenance; ``tmsp-reporter generate --account A --kind K`` generates one report.

Order: logging, settings (exit 2), MongoDB and Kafka (exit 3 naming the URL), topics,
build, serve; on SIGTERM: health NOT_SERVING, the gRPC server drains, consumers finish the
batch in hand and commit, periodic tasks stop, the producer is flushed, clients closed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime

from tmsp.reporter.v1 import reporter_pb2_grpc
from tmsp_common.auth_keys import token_verifier
from tmsp_common.grpc_server import GrpcConfig, GrpcServer
from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.consumer import ConsumerRunner
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import (
    ACCOUNTS,
    CLEANUP_PATTERNS,
    FORENSIC_DATA,
    HEARTBEATS,
    INCIDENT_COUNTS,
    INCIDENT_STATUS_CHANGES,
    INCIDENTS,
    LOG_MAINTENANCE,
    MITIGATION_TASKS,
    NONCONFORMING_ENDPOINTS,
    NOTIFICATION_REQUESTS,
    PRODUCT_LIVENESS,
    PRODUCTS,
    UPLOADS,
    Topic,
)
from tmsp_common.lifecycle import DependencyUnavailable, every, run_service, supervise
from tmsp_common.logging import configure_logging, get_logger
from tmsp_common.metrics import start_metrics_server
from tmsp_common.mongo import close, connect
from tmsp_common.settings import load_settings
from tmsp_reporter import bootstrap
from tmsp_reporter.adapters.mongo import create_indexes
from tmsp_reporter.config import ReporterSettings
from tmsp_reporter.entrypoints.consumers import ProjectionHandler
from tmsp_reporter.entrypoints.grpc_api import ReporterServicer
from tmsp_reporter.entrypoints.scoping import SERVICE_NAME, authorize

log = get_logger(__name__)

# Small, rarely changing topics first: a product or account seen before its events.
PROJECTED: dict[str, tuple[Topic, ...]] = {
    "accounts": (ACCOUNTS, PRODUCTS),
    "status": (UPLOADS, HEARTBEATS, MITIGATION_TASKS),
    "incidents": (INCIDENTS, INCIDENT_COUNTS, NONCONFORMING_ENDPOINTS, PRODUCT_LIVENESS),
    "forensic": (FORENSIC_DATA,),
}
BATCH_SIZE = {"forensic": 16}
"""Forensic chunks carry up to 256 KiB each: a batch holds at most 4 MiB of them."""
CONSUMED = tuple(t for group in PROJECTED.values() for t in group)
PRODUCED = (NOTIFICATION_REQUESTS, INCIDENT_STATUS_CHANGES, CLEANUP_PATTERNS, LOG_MAINTENANCE)
# and MITIGATION_TASKS, consumed too


async def serve(settings: ReporterSettings, stop: asyncio.Event) -> None:
    start_metrics_server(settings.metrics_port)
    db = await connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    producer = EventProducer(
        settings.kafka_bootstrap, service="reporter", topic_prefix=settings.topic_prefix
    )
    try:
        await create_indexes(db)
        await ensure_topics(
            settings.kafka_bootstrap, (*CONSUMED, *PRODUCED), prefix=settings.topic_prefix
        )
        await producer.start()
        app = bootstrap.build(settings, db, producer)
        # the correlator purges its store by these; the compacted topic keeps the latest
        await app.maintenance.announce()
        server = GrpcServer(
            GrpcConfig(port=settings.grpc_port, tls=settings.grpc_tls, tls_dir=settings.tls_dir),
            registrars=[
                lambda s: reporter_pb2_grpc.add_ReporterServiceServicer_to_server(
                    ReporterServicer(app), s
                )
            ],
            service_names=[SERVICE_NAME],
            verifier=token_verifier(
                settings.public_keys(),
                settings.auth_target,
                tls=settings.auth_tls,
                tls_dir=settings.tls_dir,
            ),
            authorize=authorize,
        )
        handler = ProjectionHandler(app.read, app.forensics)
        consumers = [
            ConsumerRunner(
                bootstrap=settings.kafka_bootstrap,
                group_id=f"{settings.consumer_group}.{name}",
                topics=topics,
                handler=handler,
                dead_letters=producer,
                topic_prefix=settings.topic_prefix,
                batch_size=BATCH_SIZE.get(name, 500),
            )
            for name, topics in PROJECTED.items()
        ]
        port = await server.start()
        tasks = [asyncio.create_task(c.run(stop), name=c.group_id) for c in consumers]
        tasks.append(
            asyncio.create_task(
                every(settings.purge_interval_s, app.maintenance.purge, stop, "purge")
            )
        )
        tasks.append(
            asyncio.create_task(
                every(
                    settings.pattern_republish_interval_s,
                    app.patterns.republish,
                    stop,
                    "republish cleanup patterns",
                )
            )
        )
        if settings.scheduler_enabled:

            async def scheduled() -> None:
                await app.reports.run_schedules()
                await app.reports.recover()

            tasks.append(
                asyncio.create_task(
                    every(settings.schedule_interval_s, scheduled, stop, "schedule")
                )
            )
        log.info("service ready", grpc_port=port)
        await supervise(tasks, stop, server.drain)
    finally:
        await producer.stop()
        await close(db)


CLI_KINDS = {
    "daily": "daily_administrative",
    "weekly": "weekly_executive",
    "monthly": "monthly_executive",
    "on-demand": "on_demand",
}


def _moment(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone offset, e.g. 2026-03-01T00:00+00:00")
    return at


async def generate_cli(settings: ReporterSettings, args: argparse.Namespace) -> int:
    from tmsp_common.errors import DomainError
    from tmsp_reporter.domain.periods import ReportKind

    def progress(message: str) -> None:
        print(f"tmsp-reporter: {message}", flush=True)

    progress(
        f"connecting to MongoDB and Kafka ({settings.kafka_bootstrap})"
        if args.notify
        else "connecting to MongoDB"
    )
    db = await connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    producer = EventProducer(
        settings.kafka_bootstrap, service="reporter", topic_prefix=settings.topic_prefix
    )
    try:
        await create_indexes(db)
        if args.notify:
            await producer.start()
        app = bootstrap.build(settings, db, producer)
        try:
            doc, created = await app.reports.generate(
                args.account,
                ReportKind(CLI_KINDS[args.kind]),
                start=args.start,
                end=args.end,
                notify=args.notify,
                requested_by="cli",
                progress=progress,
            )
        except DomainError as exc:
            print(f"tmsp-reporter: {exc.message}", file=sys.stderr)
            return 2
        verb = "generated" if created else "already there"
        progress(
            f"{verb}: {doc['_id']} ({doc.get('state')}, {doc.get('size', 0)} bytes, "
            f"{doc.get('pages', 0)} pages)"
        )
        if args.output and doc.get("state") == "ready":
            with open(args.output, "wb") as fh:
                fh.write(await app.reports.pdf(doc))
            progress(f"written to {args.output}")
        return 0
    finally:
        await producer.stop()
        await close(db)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmsp-reporter")
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate", help="generate one report now (idempotent)")
    gen.add_argument("--account", required=True, help="account id")
    gen.add_argument("--kind", required=True, choices=sorted(CLI_KINDS))
    gen.add_argument(
        "--start", type=_moment, help="periodic: a moment in the period; on-demand: the start"
    )
    gen.add_argument("--end", type=_moment, help="on-demand: the end (exclusive)")
    gen.add_argument("--notify", action="store_true", help="send the report-ready mail")
    gen.add_argument("--output", help="also write the PDF to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command != "generate":
        run_service(ReporterSettings, serve)
        return
    settings = load_settings(ReporterSettings)
    configure_logging(ReporterSettings.service_name, settings.log_level, settings.log_format)
    try:
        code = asyncio.run(generate_cli(settings, args))
    except DependencyUnavailable as exc:
        print(f"tmsp-reporter: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()

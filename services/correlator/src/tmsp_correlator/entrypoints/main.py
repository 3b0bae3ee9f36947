"""``python -m tmsp_correlator``: the faust worker.

Order: logging, settings (exit 2), ping MongoDB and Kafka and create the registry topics
(exit 3 naming the URL), build, then hand over to the faust worker, which handles SIGTERM
(stop consuming, commit, flush, close) itself.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from dataclasses import dataclass
from typing import Any

import faust

from tmsp_common.kafka.admin import ensure_topics
from tmsp_common.kafka.topics import (
    DETECTIONS,
    HEARTBEATS,
    INCIDENT_COUNTS,
    INCIDENT_STATUS_CHANGES,
    INCIDENTS,
    LOG_MAINTENANCE,
    MITIGATION_RESULTS,
    NONCONFORMING_ENDPOINTS,
    PRODUCT_LIVENESS,
    PRODUCTS,
    UPLOADS,
)
from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.logging import configure_logging, get_logger
from tmsp_common.metrics import start_metrics_server
from tmsp_common.mongo import close, connect
from tmsp_common.settings import load_settings
from tmsp_correlator import engine_build
from tmsp_correlator.adapters.faust_bus import FaustBus
from tmsp_correlator.adapters.mongo import (
    MongoIncidents,
    MongoLiveness,
    MongoMaintenance,
    MongoNonconforming,
    MongoRuleFiles,
    create_indexes,
    is_ferretdb,
)
from tmsp_correlator.bootstrap import build, mongo_database
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.entrypoints.faust_app import (
    HIT_DEAD_LETTERS,
    internal_topics,
    make_app,
    wire,
)

log = get_logger("tmsp_correlator")

TOPICS = (
    HIT_DEAD_LETTERS,
    DETECTIONS,
    MITIGATION_RESULTS,
    HEARTBEATS,
    UPLOADS,
    PRODUCTS,
    INCIDENT_STATUS_CHANGES,
    LOG_MAINTENANCE,
    INCIDENTS,
    INCIDENT_COUNTS,
    NONCONFORMING_ENDPOINTS,
    PRODUCT_LIVENESS,
)


@dataclass(frozen=True)
class Preflight:
    ferretdb: bool
    """The database is FerretDB (whose updates scan: see MongoIncidents)."""
    clean_rule_files: dict[str, str]
    """The stored last clean version of each rule file (see MongoRuleFiles)."""


async def preflight(settings: CorrelatorSettings) -> Preflight:
    """Ping MongoDB (and create indexes), reach Kafka and create the registry topics; read
    what the worker needs from Mongo before its event loop runs."""
    db = await connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    try:
        await create_indexes(db)
        ferretdb = await is_ferretdb(db)
        clean = await MongoRuleFiles(db).load()
    finally:
        await close(db)
    await ensure_topics(
        settings.kafka_bootstrap,
        TOPICS,
        prefix=settings.topic_prefix,
        replication_factor=settings.replication_factor,
    )
    await ensure_topics(
        settings.kafka_bootstrap,
        internal_topics(settings),
        replication_factor=settings.replication_factor,
    )
    return Preflight(ferretdb, clean)


class CorrelatorWorker(faust.Worker):
    """A faust worker that says ``service ready`` once tables are recovered and agents run."""

    async def on_first_start(self) -> None:
        # the match processes start loading now, while faust joins and recovers (its
        # services start after that; restarts were ~4 s longer waiting for them)
        match_processes = getattr(self.app, "match_processes", None)
        if match_processes is not None:
            match_processes.spawn()
        await super().on_first_start()

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        log.info("service ready", app_id=self.app.conf.id, engine=engine_build())


def create(
    settings: CorrelatorSettings,
    *,
    replace_in_bulk: bool = False,
    clean_rule_files: dict[str, str] | None = None,
) -> faust.App:
    app = make_app(settings)
    bus = FaustBus(app, settings.topic_prefix)
    db = mongo_database(settings)
    container = build(
        settings,
        publisher=bus,
        incidents=MongoIncidents(db, replace_in_bulk=replace_in_bulk),
        nonconforming=MongoNonconforming(db),
        liveness=MongoLiveness(db),
        maintenance=MongoMaintenance(db),
        rule_files=MongoRuleFiles(db),
        stored_clean_rule_files=clean_rule_files,
    )
    wire(app, bus, container)
    app.correlator = container  # type: ignore[attr-defined]
    return app


GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Fewer cyclic collections. The worker allocates a dict or two per hit, and with the
    default thresholds (700, 10, 10) collections took 2.2 s of a 20,000-event bench run
    against 0.23 s with these; what start-up built (rules, pySigma objects) is frozen out
    of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def prepare_data_dir(settings: CorrelatorSettings) -> None:
    """Create the worker's data directory (faust creates only its last part; the default's
    parent, ``<temp>/tmsp-correlator``, is not there on a fresh machine or pod); one line
    and exit code 2 if it cannot be."""
    path = settings.data_path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"tmsp-correlator: data directory {path} (TMSP_CORRELATOR_DATA_DIR) cannot be "
            f"created: {exc.strerror or exc}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def main() -> None:
    settings = load_settings(CorrelatorSettings)
    configure_logging(CorrelatorSettings.service_name, settings.log_level, settings.log_format)
    # at INFO only our own lines show, but a restart's table recovery is long work: faust's
    # recovery says what it reads and how long is left (its highwater and offset tables)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("faust.tables.recovery").setLevel(logging.INFO)
    prepare_data_dir(settings)
    try:
        checked = asyncio.run(preflight(settings))
    except DependencyUnavailable as exc:
        print(f"tmsp-correlator: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port)
    log.info("incident store", changes="batch replace" if checked.ferretdb else "update by id")
    app = create(
        settings, replace_in_bulk=checked.ferretdb, clean_rule_files=checked.clean_rule_files
    )
    tune_gc()
    worker_kw: dict[str, Any] = {
        "loglevel": settings.log_level,
        "override_logging": False,
        "redirect_stdouts": False,
    }
    worker = CorrelatorWorker(app, **worker_kw)
    worker.execute_from_commandline()

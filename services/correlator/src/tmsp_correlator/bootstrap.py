"""The one place that builds adapters and wires them to the use cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.logging import get_logger
from tmsp_common.mongo import Document
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import Limits
from tmsp_correlator.domain.liveness import LivenessPolicy
from tmsp_correlator.domain.rules import Reload, RuleSet, read_rule_directory, reload_rules
from tmsp_correlator.service_layer.incidents import IncidentRecorder
from tmsp_correlator.service_layer.monitoring import NonconformingEndpoints, ProductLiveness
from tmsp_correlator.service_layer.ports import (
    IncidentRepository,
    LivenessRepository,
    MaintenanceRepository,
    NonconformingRepository,
    Publisher,
    RuleFileStore,
)
from tmsp_correlator.service_layer.retention import LogRetention

log = get_logger(__name__)


def load_rules_logged(settings: CorrelatorSettings, clean: dict[str, str]) -> Reload:
    """Load the rule directory, keeping the last clean version (``clean``) of a file whose
    new version has a rejected rule; every rejected rule and every refused file version is
    logged with its file and reason."""
    sources, unreadable = read_rule_directory(settings.rules_dir)
    loaded = reload_rules(
        sources, unreadable, clean, standalone_window_s=settings.standalone_window_s
    )
    for file, reasons in loaded.kept.items():
        log.warning(
            "rule file refused; its last good version keeps running",
            file=file,
            reasons=[f"{r.rule or '(file)'}: {r.reason}" for r in reasons],
        )
    rules = loaded.rules
    for r in rules.rejected:
        log.warning("rule rejected", file=r.file, rule=r.rule, reason=r.reason)
    log.info(
        "rules loaded",
        directory=settings.rules_dir,
        detections=len(rules.detections),
        correlations=len(rules.correlations),
        rejected=len(rules.rejected),
        kept=len(loaded.kept),
    )
    return loaded


Fingerprint = tuple[tuple[str, int, int], ...]
"""(path, mtime in ns, size) of every rule file: what says the directory changed."""


def rules_fingerprint(directory: str) -> Fingerprint:
    """Changes when a rule file is added, removed or modified."""
    root = Path(directory)
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix in (".yml", ".yaml") and p.is_file():
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


@dataclass
class Container:
    settings: CorrelatorSettings
    rules: RuleSet
    limits: Limits
    recorder: IncidentRecorder
    nonconforming: NonconformingEndpoints
    liveness: ProductLiveness
    retention: LogRetention
    fingerprint: Fingerprint = field(default_factory=tuple)
    clean_rule_files: dict[str, str] = field(default_factory=dict)
    """The last version of each rule file that loaded without a rejection."""
    rule_files: RuleFileStore | None = None
    """Where the clean versions outlive the worker (None: memory only)."""
    saved_rule_files: dict[str, str] = field(default_factory=dict)

    async def save_clean_rule_files(self) -> None:
        """Store the clean versions when they changed since the last save."""
        if self.rule_files is not None and self.clean_rule_files != self.saved_rule_files:
            await self.rule_files.save(self.clean_rule_files)
            self.saved_rule_files = dict(self.clean_rule_files)

    def reload_rules_if_changed(self) -> bool:
        """Swap in a freshly loaded rule set when the directory changed; window state stays.
        A file whose new version has a rejected rule keeps its last clean version."""
        changed = reload_if_changed(self.settings, self.fingerprint, self.clean_rule_files)
        if changed is None:
            return False
        loaded, self.fingerprint = changed
        self.rules, self.clean_rule_files = loaded.rules, loaded.clean
        return True


def reload_if_changed(
    settings: CorrelatorSettings, fingerprint: Fingerprint, clean: dict[str, str]
) -> tuple[Reload, Fingerprint] | None:
    """The rules directory loaded again (and its new fingerprint) if it changed since
    ``fingerprint``; None if it did not. ``clean``: each file's last clean version."""
    fp = rules_fingerprint(settings.rules_dir)
    if fp == fingerprint:
        return None
    return load_rules_logged(settings, clean), fp


def build(
    settings: CorrelatorSettings,
    *,
    publisher: Publisher,
    incidents: IncidentRepository,
    nonconforming: NonconformingRepository,
    liveness: LivenessRepository,
    maintenance: MaintenanceRepository,
    rule_files: RuleFileStore | None = None,
    stored_clean_rule_files: dict[str, str] | None = None,
) -> Container:
    """``stored_clean_rule_files``: what ``rule_files`` held at start-up (read before the
    worker's event loop runs), the fallbacks of files that are broken now."""
    loaded = load_rules_logged(settings, stored_clean_rule_files or {})
    return Container(
        settings=settings,
        rules=loaded.rules,
        clean_rule_files=loaded.clean,
        rule_files=rule_files,
        saved_rule_files=dict(stored_clean_rule_files or {}),
        limits=Limits(
            allowed_lateness_s=settings.allowed_lateness_s,
            max_window_events=settings.max_window_events,
            max_incident_event_ids=settings.max_incident_event_ids,
            max_incident_endpoints=settings.max_incident_endpoints,
        ),
        recorder=IncidentRecorder(
            incidents, publisher, live_count_interval_s=settings.live_count_interval_s
        ),
        nonconforming=NonconformingEndpoints(nonconforming, publisher),
        liveness=ProductLiveness(
            liveness,
            publisher,
            LivenessPolicy(
                offline_multiple=settings.offline_multiple,
                default_heartbeat_interval_s=settings.default_heartbeat_interval_s,
                logs_timeout_s=settings.logs_timeout_s,
            ),
        ),
        retention=LogRetention(maintenance, incidents, nonconforming),
        fingerprint=rules_fingerprint(settings.rules_dir),
    )


def mongo_database(settings: CorrelatorSettings) -> AsyncDatabase[Document]:
    """A client bound lazily (first use happens inside the worker's event loop)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongo_url.get_secret_value(), tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    return client[settings.mongo_database]

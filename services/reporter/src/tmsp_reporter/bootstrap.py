"""The one place that builds adapters and wires them to the use cases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.clock import Clock, SystemClock
from tmsp_common.kafka.producer import BusPublisher
from tmsp_common.mongo import Document
from tmsp_reporter.adapters.mongo import ReadModel, ReportStore
from tmsp_reporter.adapters.mongo_forensics import ForensicStore
from tmsp_reporter.adapters.mongo_patterns import PatternStore
from tmsp_reporter.adapters.pdf import render
from tmsp_reporter.config import ReporterSettings
from tmsp_reporter.service_layer.exports import ConsolidatedLogs
from tmsp_reporter.service_layer.forensics import ForensicData
from tmsp_reporter.service_layer.maintenance import Maintenance
from tmsp_reporter.service_layer.mitigation import MitigationTasks
from tmsp_reporter.service_layer.patterns import CleanupPatterns
from tmsp_reporter.service_layer.portal import Portal
from tmsp_reporter.service_layer.ports import Publisher
from tmsp_reporter.service_layer.reports import ReportConfig, ReportService
from tmsp_reporter.service_layer.triage import IncidentTriage


@dataclass
class App:
    read: ReadModel
    portal: Portal
    reports: ReportService
    exports: ConsolidatedLogs
    maintenance: Maintenance
    mitigation: MitigationTasks
    triage: IncidentTriage
    patterns: CleanupPatterns
    forensics: ForensicData


def build(
    settings: ReporterSettings,
    db: AsyncDatabase[Document],
    publisher: Publisher,
    *,
    clock: Clock | None = None,
) -> App:
    clock = clock or SystemClock()
    publisher = BusPublisher(publisher)
    read = ReadModel(db)
    store = ReportStore(db)
    reports = ReportService(
        read,
        store,
        publisher,
        render,
        clock,
        ReportConfig(
            max_report_bytes=settings.max_report_bytes,
            max_attachment_bytes=settings.max_attachment_bytes,
            portal_url=settings.portal_url,
            stale_after=timedelta(seconds=settings.stale_generation_s),
            schedule_delay=timedelta(hours=settings.schedule_delay_hours),
        ),
    )
    patterns = CleanupPatterns(PatternStore(db), read, publisher, clock)
    forensics = ForensicData(ForensicStore(db), read, clock)
    return App(
        read=read,
        portal=Portal(read),
        reports=reports,
        exports=ConsolidatedLogs(read),
        maintenance=Maintenance(read, store, forensics, publisher, clock),
        mitigation=MitigationTasks(read, patterns, forensics, publisher, clock),
        triage=IncidentTriage(read, publisher, clock),
        patterns=patterns,
        forensics=forensics,
    )

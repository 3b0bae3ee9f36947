"""Reports: generate (on demand and on schedule), store, download, notify; recipients.

A report's id derives from (account, kind, period), and the first insert of its
description is the claim: whoever inserts it generates it; a restart, a second replica or a
second click finds it and returns it instead of generating again. A generation that died
half-way leaves a ``generating`` description behind; after ``stale_after`` the next request
(or the scheduler) takes it over with a new claim (``report_claims``, unique per attempt).
The report-ready notification has a stable id, so publishing it twice sends one mail; a
report whose notification was not yet acknowledged is re-published by :meth:`recover`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tmsp.events.v1 import notifications_pb2
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS
from tmsp_common.logging import get_logger
from tmsp_common.mongo import Document
from tmsp_reporter.adapters import convert
from tmsp_reporter.adapters.mongo import ReadModel, ReportStore
from tmsp_reporter.adapters.pdf import RenderedPdf
from tmsp_reporter.domain.aggregation import most_severe_first, previous_period, summarise
from tmsp_reporter.domain.content import (
    MAX_LISTED_ENDPOINTS,
    MAX_LISTED_INCIDENTS,
    ReportContent,
)
from tmsp_reporter.domain.model import AccountRow, ReportSchedule, account_products
from tmsp_reporter.domain.periods import (
    PERIODIC_KINDS,
    Period,
    ReportKind,
    due_period,
    last_completed,
    on_demand,
    period_containing,
    report_id,
    zone,
)
from tmsp_reporter.domain.validation import MAX_RECIPIENTS, normalise_email
from tmsp_reporter.service_layer.metrics import REPORT_BYTES, REPORT_SECONDS, REPORTS_GENERATED
from tmsp_reporter.service_layer.ports import Publisher

log = get_logger(__name__)

MAX_REPORT_INCIDENTS = 20_000
"""Incidents read for one report's aggregates (keeps memory and time bounded)."""

Renderer = Callable[[ReportContent], RenderedPdf]
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)


def retry_delay(failures: int) -> timedelta:
    """How long a scheduled report waits after its ``failures``-th failed generation."""
    delay: timedelta = RETRY_FIRST * (1 << min(failures - 1, 20))
    return min(delay, RETRY_MAX)


@dataclass(frozen=True)
class ReportConfig:
    max_report_bytes: int = 8 * 1024 * 1024
    max_attachment_bytes: int = 700 * 1024
    portal_url: str = "https://localhost:8443"
    stale_after: timedelta = timedelta(minutes=10)
    schedule_delay: timedelta = timedelta(hours=3)
    owner: str = ""


class ReportService:
    def __init__(
        self,
        read: ReadModel,
        store: ReportStore,
        publisher: Publisher,
        renderer: Renderer,
        clock: Clock,
        config: ReportConfig,
    ) -> None:
        self.read = read
        self.store = store
        self.publisher = publisher
        self.render = renderer
        self.clock = clock
        self.config = config
        self.owner = config.owner or uuid.uuid4().hex[:12]
        self._failed: dict[str, tuple[int, datetime]] = {}
        """Scheduled reports whose generation failed: (failures so far, not retried before).
        In memory: a restarted replica tries once at once, then backs off again."""

    # --- periods ---------------------------------------------------------------------

    async def _time_zone(self, account_id: str) -> tuple[str, AccountRow]:
        account = await self.read.account(account_id)
        if account is None or account.deleted:
            raise NotFound("account not found")
        schedule = await self.store.schedule(account_id)
        return schedule.time_zone or account.time_zone or "UTC", account

    def period_for(
        self,
        kind: ReportKind,
        time_zone: str,
        start: datetime | None,
        end: datetime | None,
    ) -> Period:
        now = self.clock.now()
        if kind is ReportKind.ON_DEMAND:
            if start is None or end is None:
                raise InvalidArgument("period_start", "an on-demand report needs a start and end")
            period = on_demand(start, end, time_zone)
        elif start is None:
            period = last_completed(kind, now, time_zone)
        else:
            period = period_containing(kind, start, time_zone)
        if period.end > now:
            raise InvalidArgument("period_end", "the period has not ended yet")
        return period

    # --- generation ------------------------------------------------------------------

    async def generate(
        self,
        account_id: str,
        kind: ReportKind,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        notify: bool = False,
        requested_by: str = "",
        progress: Progress = _quiet,
    ) -> tuple[Document, bool]:
        """The report of ``account_id`` for ``kind`` and the period; (description, created)."""
        time_zone, _ = await self._time_zone(account_id)
        period = self.period_for(kind, time_zone, start, end)
        return await self._ensure(account_id, kind, period, notify, requested_by, progress)

    async def _ensure(
        self,
        account_id: str,
        kind: ReportKind,
        period: Period,
        notify: bool,
        requested_by: str,
        progress: Progress,
    ) -> tuple[Document, bool]:
        rid = report_id(account_id, kind, period)
        now = self.clock.now()
        doc: Document = {
            "_id": rid,
            "account_id": account_id,
            "kind": kind.value,
            "period_start": period.start,
            "period_end": period.end,
            "time_zone": period.time_zone,
            "state": "generating",
            "attempt": 0,
            "claimed_at": now,
            "created_at": now,
            "notify": notify,
            "requested_by": requested_by,
        }
        if not await self.store.create(doc):
            existing = await self.store.get(rid)
            if existing is None:  # purged in between: try once more from scratch
                if not await self.store.create(doc):
                    raise FailedPrecondition("report is being generated; retry shortly")
            elif existing["state"] == "ready":
                progress("report exists already")
                return existing, False
            elif existing["claimed_at"] > now - self.config.stale_after:
                progress("report is being generated by another process")
                return existing, False
            else:
                attempt = int(existing.get("attempt", 0)) + 1
                if not await self.store.claim(rid, attempt, self.owner, now):
                    return existing, False
                progress(f"taking over a stale generation (attempt {attempt})")
                doc = await self.store.update(rid, {"attempt": attempt, "claimed_at": now}) or doc
                doc["notify"] = bool(doc.get("notify")) or notify
        try:
            stored = await self._produce(doc, kind, period, progress)
        except BaseException:
            await self.store.reports.delete_one(
                {"_id": rid, "attempt": doc.get("attempt", 0), "state": "generating"}
            )
            raise
        if doc.get("notify"):
            progress("publishing the report-ready notification")
            stored = await self.notify(stored)
        return stored, True

    async def content(self, account_id: str, kind: ReportKind, period: Period) -> ReportContent:
        account = await self.read.account(account_id)
        if account is None:
            raise NotFound("account not found")
        products = account_products(await self.read.products_of([account_id]))
        incidents = [
            convert.incident_view(i)
            async for i in self.read.incidents_between(
                account_id, period.start, period.end, limit=MAX_REPORT_INCIDENTS
            )
        ]
        previous = previous_period(period)
        previous_total = await self.read.count_incidents_between(
            account_id, previous.start, previous.end
        )
        endpoints = await self.read.list_nonconforming(
            account_id, include_cleared=False, limit=MAX_LISTED_ENDPOINTS
        )
        open_endpoints = await self.read.nonconforming_counts([account_id])
        counts = await self.read.counts_of([account_id])
        ordered = most_severe_first(incidents)
        return ReportContent(
            report_id=report_id(account_id, kind, period),
            kind=kind,
            account=account,
            period=period,
            generated_at=self.clock.now(),
            products=products.registered,
            compliance=products.compliance,
            incidents=tuple(ordered[:MAX_LISTED_INCIDENTS]),
            incidents_total=len(ordered),
            nonconforming=tuple(convert.nonconforming_row(n) for n in endpoints),
            nonconforming_total=max(open_endpoints.get(account_id, 0), len(endpoints)),
            summary=summarise(incidents, period, previous_total=previous_total),
            daily_count=counts.get((account_id, True)),
        )

    async def _produce(
        self, doc: Document, kind: ReportKind, period: Period, progress: Progress
    ) -> Document:
        rid = doc["_id"]
        started = time.perf_counter()
        progress(f"collecting data for {period.label()} ({period.time_zone})")
        content = await self.content(doc["account_id"], kind, period)
        progress(
            f"rendering the PDF ({content.incidents_total} incidents, "
            f"{len(content.products)} products)"
        )
        pdf = await asyncio.to_thread(self.render, content)
        if len(pdf.data) > self.config.max_report_bytes:
            raise FailedPrecondition(
                f"report of {len(pdf.data)} bytes exceeds the bound of "
                f"{self.config.max_report_bytes}"
            )
        progress(f"storing {len(pdf.data)} bytes, {pdf.pages} pages")
        await self.store.store_pdf(rid, pdf.data)
        stored = await self.store.update(
            rid,
            {
                "state": "ready",
                "title": content.title,
                "filename": content.filename,
                "size": len(pdf.data),
                "sha256": hashlib.sha256(pdf.data).hexdigest(),
                "pages": pdf.pages,
                "created_at": self.clock.now(),
            },
        )
        if stored is None:
            raise FailedPrecondition("report removed while it was generated")
        REPORTS_GENERATED.labels(kind.value).inc()
        REPORT_SECONDS.observe(time.perf_counter() - started)
        REPORT_BYTES.observe(len(pdf.data))
        log.info(
            "report generated",
            report_id=rid,
            account_id=doc["account_id"],
            kind=kind.value,
            size=len(pdf.data),
        )
        return stored

    async def pdf(self, report: Document) -> bytes:
        return b"".join([c async for c in self.store.pdf_chunks(report["_id"])])

    async def notify(self, report: Document) -> Document:
        """Publish the report-ready request (stable id) and record it; returns the report."""
        account_id = report["account_id"]
        recipients = await self.store.recipients(account_id)
        period = Period(report["period_start"], report["period_end"], report["time_zone"])
        request = notifications_pb2.NotificationRequest(
            notification_id=f"report-ready-{report['_id']}",
            kind=notifications_pb2.NOTIFICATION_KIND_REPORT_READY,
            account_id=account_id,
            recipients=recipients,
            time_zone=report["time_zone"],
            params={
                "report_name": report.get("title", ""),
                "period": period.label(),
                "download_url": f"{self.config.portal_url}/reports/{report['_id']}",
            },
        )
        if int(report.get("size", 0)) <= self.config.max_attachment_bytes:
            request.params["attached"] = "yes"
            request.attachments.append(
                notifications_pb2.Attachment(
                    filename=report.get("filename", "report.pdf"),
                    content_type="application/pdf",
                    content=await self.pdf(report),
                )
            )
        await self.publisher.publish(
            NOTIFICATION_REQUESTS, request, key=request.notification_id, account_id=account_id
        )
        return await self.store.update(report["_id"], {"notified": True}) or report

    # --- scheduled generation and recovery -------------------------------------------

    def due(
        self, schedule: ReportSchedule, time_zone: str, since: datetime | None = None
    ) -> list[tuple[ReportKind, Period]]:
        """The enabled kinds' latest due periods, except those that ended before ``since``
        (the account's first appearance: no report of a period it did not exist in)."""
        now = self.clock.now()
        wanted = {
            ReportKind.DAILY_ADMINISTRATIVE: schedule.daily_administrative,
            ReportKind.WEEKLY_EXECUTIVE: schedule.weekly_executive,
            ReportKind.MONTHLY_EXECUTIVE: schedule.monthly_executive,
        }
        due = [
            (k, due_period(k, now, time_zone, self.config.schedule_delay))
            for k in PERIODIC_KINDS
            if wanted[k]
        ]
        return [(k, p) for k, p in due if since is None or p.end > since]

    async def run_schedules(self) -> int:
        """Generate every due periodic report that does not exist yet; returns how many.

        A report whose generation fails is retried with exponential backoff (1 min, doubling,
        at most 6 h), not on every pass: a report that cannot be built (too large, a bad
        record) must not be rebuilt and logged every minute."""
        made = 0
        now = self.clock.now()
        seen: set[str] = set()
        for account_id in await self.read.active_account_ids():
            try:
                time_zone, account = await self._time_zone(account_id)
                schedule = await self.store.schedule(account_id)
                due = self.due(schedule, time_zone, account.first_seen)
                ids = {report_id(account_id, k, p): (k, p) for k, p in due}
                seen.update(ids)
                done = await self.store.existing(list(ids))
                for rid, (kind, period) in ids.items():
                    failed = self._failed.get(rid)
                    if rid in done or (failed is not None and failed[1] > now):
                        continue
                    try:
                        _, created = await self._ensure(
                            account_id, kind, period, True, "schedule", _quiet
                        )
                    except Exception as exc:  # noqa: BLE001 - retried later, with backoff
                        failures = (failed[0] if failed else 0) + 1
                        delay = retry_delay(failures)
                        self._failed[rid] = (failures, now + delay)
                        log.warning(
                            "scheduled report failed",
                            report_id=rid,
                            account_id=account_id,
                            failures=failures,
                            retry_in_s=delay.total_seconds(),
                            error=f"{type(exc).__name__}: {exc}",
                        )
                        continue
                    self._failed.pop(rid, None)
                    made += int(created)
            except Exception as exc:  # noqa: BLE001 - one account must not stop the others
                log.warning(
                    "scheduled reports of an account failed",
                    account_id=account_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
        # periods roll over: forget failures of reports no longer due
        self._failed = {rid: v for rid, v in self._failed.items() if rid in seen}
        return made

    async def recover(self) -> None:
        """Re-publish unacknowledged notifications and take over stale generations."""
        now = self.clock.now()
        for report in await self.store.unnotified(now - timedelta(seconds=30)):
            await self.notify(report)
        for report in await self.store.stale_generating(now - self.config.stale_after):
            period = Period(report["period_start"], report["period_end"], report["time_zone"])
            await self._ensure(
                report["account_id"],
                ReportKind(report["kind"]),
                period,
                bool(report.get("notify")),
                str(report.get("requested_by", "")),
                _quiet,
            )

    # --- reading ---------------------------------------------------------------------

    async def list_reports(
        self, account_id: str, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[Document]:
        return await self.store.list_reports(account_id, limit=limit, after=after)

    async def open_download(
        self, account_id: str | None, report_id_: str
    ) -> tuple[Document, AsyncIterator[bytes]]:
        """The report and its PDF chunks; NotFound for an unknown or foreign report."""
        if not report_id_:
            raise InvalidArgument("report_id", "required")
        report = await self.store.get(report_id_, account_id)
        if report is None:
            raise NotFound("report not found")
        if report["state"] != "ready":
            raise FailedPrecondition("report is still being generated; retry shortly")
        return report, self.store.pdf_chunks(report_id_)

    # --- recipients and schedule -----------------------------------------------------

    async def recipients(self, account_id: str) -> list[str]:
        return await self.store.recipients(account_id)

    async def add_recipient(self, account_id: str, email: str) -> list[str]:
        address = normalise_email(email)
        current = await self.store.recipients(account_id)
        if address not in current and len(current) >= MAX_RECIPIENTS:
            raise FailedPrecondition(f"at most {MAX_RECIPIENTS} report recipients")
        await self.store.add_recipient(account_id, address, self.clock.now())
        return await self.store.recipients(account_id)

    async def remove_recipient(self, account_id: str, email: str) -> list[str]:
        await self.store.remove_recipient(account_id, normalise_email(email))
        return await self.store.recipients(account_id)

    async def schedule(self, account_id: str) -> ReportSchedule:
        return await self.store.schedule(account_id)

    async def set_schedule(self, schedule: ReportSchedule) -> ReportSchedule:
        if schedule.time_zone:
            zone(schedule.time_zone)
        await self.store.set_schedule(schedule)
        return schedule

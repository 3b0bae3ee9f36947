"""Consolidated logs: the correlation results of a period as CSV, streamed in chunks.

One row per step of each incident's chain of events (an incident without a chain of
events gets one row). Cells that a spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from tmsp_common.errors import InvalidArgument
from tmsp_reporter.adapters import convert
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.domain.validation import csv_cell

HEADER = (
    "incident_id",
    "title",
    "severity",
    "status",
    "first_seen",
    "last_seen",
    "event_count",
    "attack_tags",
    "event_at",
    "event_id",
    "rule_id",
    "summary",
    "endpoint",
)
CHUNK_BYTES = 64 * 1024
MAX_PERIOD = timedelta(days=366)
MAX_INCIDENTS = 200_000


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at else ""


class ConsolidatedLogs:
    def __init__(self, read: ReadModel) -> None:
        self.read = read

    def validate(self, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        if since is None or until is None:
            raise InvalidArgument("since", "a period (since and until) is required")
        if until <= since:
            raise InvalidArgument("until", "must be after since")
        if until - since > MAX_PERIOD:
            raise InvalidArgument("until", "at most 366 days at once")
        return since, until

    async def csv_chunks(
        self, account_id: str, since: datetime, until: datetime
    ) -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(HEADER)
        async for msg in self.read.incidents_between(account_id, since, until, limit=MAX_INCIDENTS):
            inc = convert.incident_view(msg)
            head = [
                inc.incident_id,
                inc.title,
                inc.severity.label,
                inc.status.name.lower(),
                _iso(inc.first_seen),
                _iso(inc.last_seen),
                inc.event_count,
                " ".join(inc.attack_tags),
            ]
            steps = inc.timeline or ()
            if not steps:
                writer.writerow([csv_cell(v) for v in [*head, "", "", "", "", ""]])
            for step in steps:
                row = [*head, _iso(step.at), step.event_id, step.rule_id, step.summary]
                writer.writerow([csv_cell(v) for v in [*row, step.endpoint]])
            if buffer.tell() >= CHUNK_BYTES:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

"""Read use cases: the Customer Accounts screen, incidents, endpoints, products.

``account_id`` arguments are already scoped by the interceptor: a customer's own account,
or for a provider operator any account or None (every account).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tmsp.events.v1 import incidents_pb2
from tmsp_common.errors import InvalidArgument, NotFound
from tmsp_common.severity import Severity
from tmsp_reporter.adapters.mongo import ReadModel
from tmsp_reporter.domain.model import (
    AccountRow,
    AccountScreenRow,
    IncidentStatus,
    ProductRow,
    account_products,
)


@dataclass(frozen=True)
class IncidentQuery:
    account_id: str | None
    statuses: tuple[IncidentStatus, ...] = ()
    min_severity: Severity = Severity.UNSPECIFIED
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    after: tuple[datetime, str] | None = None

    def validated(self) -> IncidentQuery:
        if self.since and self.until and self.until <= self.since:
            raise InvalidArgument("until", "must be after since")
        return self


class Portal:
    def __init__(self, read: ReadModel) -> None:
        self.read = read

    async def screen_rows(self, accounts: Sequence[AccountRow]) -> list[AccountScreenRow]:
        ids = [a.account_id for a in accounts]
        products = await self.read.products_of(ids)
        counts = await self.read.counts_of(ids)
        nonconforming = await self.read.nonconforming_counts(ids)
        rows = []
        for a in accounts:
            mine = account_products(p for p in products if p.account_id == a.account_id)
            rows.append(
                AccountScreenRow(
                    account=a,
                    incidents=counts.get((a.account_id, True)),
                    live=counts.get((a.account_id, False)),
                    last_received=mine.last_received,
                    compliance=mine.compliance,
                    product_count=len(mine.registered),
                    nonconforming=nonconforming.get(a.account_id, 0),
                )
            )
        return rows

    async def list_accounts(
        self,
        account_id: str | None,
        *,
        limit: int,
        after: tuple[str, str] | None,
        include_deleted: bool,
    ) -> list[AccountScreenRow]:
        accounts = await self.read.list_accounts(
            account_id, limit=limit, after=after, include_deleted=include_deleted
        )
        return await self.screen_rows(accounts)

    async def get_account(self, account_id: str) -> AccountScreenRow:
        account = await self.read.account(account_id)
        if account is None:
            raise NotFound("account not found")
        return (await self.screen_rows([account]))[0]

    async def list_incidents(self, query: IncidentQuery) -> list[incidents_pb2.Incident]:
        q = query.validated()
        return await self.read.list_incidents(
            q.account_id,
            statuses=q.statuses,
            min_severity=q.min_severity,
            since=q.since,
            until=q.until,
            limit=q.limit,
            after=q.after,
        )

    async def get_incident(
        self, account_id: str | None, incident_id: str
    ) -> incidents_pb2.Incident:
        if not incident_id:
            raise InvalidArgument("incident_id", "required")
        incident = await self.read.incident(account_id, incident_id)
        if incident is None:
            raise NotFound("incident not found")
        return incident

    async def list_nonconforming(
        self,
        account_id: str | None,
        *,
        include_cleared: bool,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[incidents_pb2.NonconformingEndpoint]:
        return await self.read.list_nonconforming(
            account_id, include_cleared=include_cleared, limit=limit, after=after
        )

    async def list_products(self, account_id: str) -> list[ProductRow]:
        return await self.read.products_of([account_id])

"""Security events: what happened to an account's users, for its administrators.

Auth publishes every security event on its audit topic (``tmsp.auth.audit.v1``) before it
answers; a consumer group of auth's own stores them, and ``ListSecurityEvents`` reads that
store, newest first, scoped to one account. Events without an account (a login attempt for
an address nobody has) stay on the topic only (kept 90 days for a SIEM): they belong to no
tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tmsp.events.v1 import auth_pb2, envelope_pb2
from tmsp_auth.adapters.repositories import AccountRepository, SecurityEventRepository
from tmsp_common.authn import Principal, Role
from tmsp_common.clock import Clock
from tmsp_common.errors import NotFound
from tmsp_common.kafka.envelope import from_timestamp
from tmsp_common.logging import get_logger
from tmsp_common.mongo import Document

log = get_logger(__name__)


def event_document(env: envelope_pb2.Envelope, event: auth_pb2.AuthAuditEvent) -> Document | None:
    """The stored form of one audit event; None for an event of no account."""
    account_id = event.account_id or env.account_id
    if not account_id:
        return None
    occurred = from_timestamp(env.occurred_at) if env.HasField("occurred_at") else None
    return {
        "_id": env.event_id,
        "account_id": account_id,
        "user_id": event.user_id,
        "kind": int(event.kind),
        "email": event.email,
        "source_ip": event.source_ip,
        "detail": event.detail,
        "occurred_at": occurred or datetime.now(UTC),
    }


class SecurityEvents:
    def __init__(
        self,
        events: SecurityEventRepository,
        accounts: AccountRepository,
        clock: Clock,
        retention: timedelta,
    ) -> None:
        self.events = events
        self.accounts = accounts
        self.clock = clock
        self.retention = retention

    async def record(self, docs: Sequence[Document]) -> None:
        await self.events.add_many(list(docs))

    async def list(
        self,
        principal: Principal,
        account_id: str,
        *,
        user_id: str,
        kinds: Sequence[int],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Document]:
        """One account's events (its administrators, operators); another tenant's account
        is NOT_FOUND, an analyst PERMISSION_DENIED."""
        account_id = account_id or principal.account_id
        principal.require_account(account_id)
        if await self.accounts.get_any(account_id) is None:
            raise NotFound("account not found")
        principal.require_role(Role.ACCOUNT_ADMINISTRATOR)
        return await self.events.page(
            account_id, user_id=user_id, kinds=list(kinds), limit=limit, after=after
        )

    async def purge(self) -> int:
        """Remove events older than the retention; how many went."""
        removed = await self.events.purge(self.clock.now() - self.retention)
        if removed:
            log.info("security events purged", removed=removed)
        return removed

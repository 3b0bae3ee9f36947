"""Settings and delivery log use cases behind the gRPC API, with tenant isolation.

Account administrators read and change their own account; analysts only read it; provider
operators work on every account. Another tenant's account is NotFound, never "forbidden".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from tmsp_common.authn import Principal, Role
from tmsp_common.errors import FailedPrecondition, InvalidArgument
from tmsp_common.severity import Severity
from tmsp_notifier.domain.model import CONFIGURABLE_KINDS, DeliveryRecord, Kind, KindSettings
from tmsp_notifier.domain.validation import validate_recipients
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.ports import DeliveryLog, SettingsRepository

READ_ROLES = (Role.ACCOUNT_ADMINISTRATOR, Role.ANALYST)
MAX_PER_HOUR_LIMIT = 1000


@dataclass(frozen=True)
class SettingsUpdate:
    account_id: str
    kind: Kind
    enabled: bool
    min_severity: Severity
    notify_administrator: bool
    extra_recipients: tuple[str, ...]
    max_per_hour: int
    digest: bool
    expected_version: int | None = None


@dataclass
class SettingsAdmin:
    settings: SettingsRepository
    log: DeliveryLog
    deliverer: Deliverer

    def _check_account(self, principal: Principal, account_id: str) -> None:
        if not account_id:
            raise InvalidArgument("account_id", "required")
        principal.require_account(account_id)

    @staticmethod
    def _check_kind(kind: Kind) -> None:
        if kind not in CONFIGURABLE_KINDS:
            raise InvalidArgument("kind", f"{kind.value} cannot be configured")

    async def get(self, principal: Principal, account_id: str, kind: Kind) -> KindSettings:
        self._check_account(principal, account_id)
        principal.require_role(*READ_ROLES)
        self._check_kind(kind)
        return await self.deliverer.settings_for(account_id, kind)

    async def list_all(self, principal: Principal, account_id: str) -> list[KindSettings]:
        self._check_account(principal, account_id)
        principal.require_role(*READ_ROLES)
        kinds = sorted(CONFIGURABLE_KINDS, key=lambda k: k.value)
        return [await self.deliverer.settings_for(account_id, k) for k in kinds]

    async def update(self, principal: Principal, update: SettingsUpdate) -> KindSettings:
        self._check_account(principal, update.account_id)
        principal.require_role(Role.ACCOUNT_ADMINISTRATOR)
        self._check_kind(update.kind)
        if not 0 <= update.max_per_hour <= MAX_PER_HOUR_LIMIT:
            raise InvalidArgument("max_per_hour", f"between 0 and {MAX_PER_HOUR_LIMIT}")
        if update.min_severity == Severity.UNSPECIFIED:
            raise InvalidArgument("min_severity", "required")
        recipients = validate_recipients(update.extra_recipients, "extra_recipients")
        current = await self.deliverer.settings_for(update.account_id, update.kind)
        if update.expected_version is not None and update.expected_version != current.version:
            raise FailedPrecondition(
                f"settings changed meanwhile (version {current.version}); reload and retry"
            )
        return await self.settings.put(
            replace(
                current,
                enabled=update.enabled,
                min_severity=update.min_severity,
                notify_administrator=update.notify_administrator,
                extra_recipients=recipients,
                max_per_hour=update.max_per_hour,
                digest=update.digest,
            )
        )

    async def deliveries(
        self,
        principal: Principal,
        account_id: str,
        *,
        limit: int = 50,
        after: tuple[datetime, str] | None = None,
    ) -> list[DeliveryRecord]:
        self._check_account(principal, account_id)
        principal.require_role(*READ_ROLES)
        if not 1 <= limit <= 500:
            raise InvalidArgument("page_size", "between 1 and 500")
        return await self.log.list_for_account(account_id, limit=limit, after=after)

from __future__ import annotations

import pytest

from tmsp_common.authn import Principal, Role
from tmsp_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tmsp_common.severity import Severity
from tmsp_notifier.adapters.memory import MemoryDeliveryLog, MemorySettings
from tmsp_notifier.domain.model import Kind, Notification
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.settings_admin import SettingsAdmin, SettingsUpdate

ADMIN_A = Principal("u1", "a", frozenset({Role.ACCOUNT_ADMINISTRATOR}))
ANALYST_A = Principal("u2", "a", frozenset({Role.ANALYST}))
ADMIN_B = Principal("u3", "b", frozenset({Role.ACCOUNT_ADMINISTRATOR}))
OPERATOR = Principal("u4", "p", frozenset({Role.PROVIDER_OPERATOR}))


def update(**kw: object) -> SettingsUpdate:
    base: dict[str, object] = {
        "account_id": "a",
        "kind": Kind.INCIDENT,
        "enabled": True,
        "min_severity": Severity.HIGH,
        "notify_administrator": False,
        "extra_recipients": ("soc@a.example",),
        "max_per_hour": 3,
        "digest": True,
    }
    base.update(kw)
    return SettingsUpdate(**base)  # type: ignore[arg-type]


@pytest.fixture
def admin(deliverer: Deliverer) -> SettingsAdmin:
    assert isinstance(deliverer.settings, MemorySettings)
    assert isinstance(deliverer.log, MemoryDeliveryLog)
    return SettingsAdmin(deliverer.settings, deliverer.log, deliverer)


async def test_roles_and_tenants(admin: SettingsAdmin) -> None:
    with pytest.raises(PermissionDenied):
        await admin.update(ANALYST_A, update())
    with pytest.raises(NotFound):
        await admin.update(ADMIN_B, update())
    with pytest.raises(NotFound):
        await admin.get(ADMIN_B, "a", Kind.INCIDENT)
    stored = await admin.update(ADMIN_A, update())
    assert stored.version == 1 and stored.max_per_hour == 3
    assert (await admin.get(ANALYST_A, "a", Kind.INCIDENT)) == stored
    assert (await admin.get(OPERATOR, "a", Kind.INCIDENT)) == stored
    again = await admin.update(OPERATOR, update(max_per_hour=7, expected_version=1))
    assert again.version == 2
    with pytest.raises(FailedPrecondition):
        await admin.update(ADMIN_A, update(expected_version=1))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extra_recipients": ("x@a.example\nBcc: y@evil.example",)}, "extra_recipients"),
        ({"kind": Kind.CONFIRMATION_CODE}, "kind"),
        ({"max_per_hour": 100_000}, "max_per_hour"),
        ({"min_severity": Severity.UNSPECIFIED}, "min_severity"),
    ],
)
async def test_invalid_updates(admin: SettingsAdmin, change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await admin.update(ADMIN_A, update(**change))
    assert err.value.field == field


async def test_delivery_log_is_per_tenant(admin: SettingsAdmin, deliverer: Deliverer) -> None:
    for i, acct in enumerate(["a", "a", "b"]):
        await deliverer.deliver(
            Notification(f"n{i}", Kind.REPORT_READY, acct, ("r@x.example",), {"report_name": "W"})
        )
    rows = await admin.deliveries(ANALYST_A, "a")
    assert {r.notification_id for r in rows} == {"n0", "n1"}
    with pytest.raises(NotFound):
        await admin.deliveries(ADMIN_B, "a")
    assert len(await admin.deliveries(OPERATOR, "b")) == 1

"""Product registration use cases with in-memory adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tmsp_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tmsp_ingest.domain.products import ProductUpdate, State
from tmsp_ingest.testing import ADMIN_A, ADMIN_B, OPERATOR, REG, World


async def test_register_issues_credentials_once_and_publishes_a_snapshot(world: World) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    assert product.state is State.ACTIVE and product.account_id == "acct-a"
    assert creds.user_name == product.user_name and len(creds.password) >= 20
    assert creds.password not in product.password_hash
    assert world.hasher.verify(product.password_hash, creds.password)
    assert [p.product_id for p in world.publisher.snapshots] == [product.product_id]
    assert world.products.items[product.product_id] == product


async def test_registration_email_must_match_the_account(world: World) -> None:
    with pytest.raises(FailedPrecondition, match="email"):
        await world.registry.register(
            OPERATOR, replace(REG, registration_email="someone@else.example")
        )
    assert world.products.items == {}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"deleted": True}, "account deleted"),
        ({"valid_until_days": -1}, "account expired"),
    ],
)
async def test_products_of_deleted_or_expired_accounts_are_refused(
    world: World, change: dict[str, object], reason: str
) -> None:
    account = world.accounts.items["acct-a"]
    if "deleted" in change:
        account = replace(account, deleted=True)
    else:
        account = replace(account, valid_until=world.clock.now() + timedelta(days=-1))
    world.accounts.items["acct-a"] = account
    with pytest.raises(FailedPrecondition, match=reason):
        await world.registry.register(OPERATOR, REG)


async def test_unknown_account_is_refused(world: World) -> None:
    with pytest.raises(FailedPrecondition, match="account unknown"):
        await world.registry.register(OPERATOR, replace(REG, account_id="nope"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": " "}, "name"),
        ({"upload_frequency_seconds": 5}, "upload_frequency_seconds"),
        ({"upload_bandwidth": 10}, "upload_bandwidth_bytes_per_second"),
        ({"registration_email": "nope"}, "registration_email"),
        ({"ssh_public_key": "garbage"}, "ssh_public_key"),
    ],
)
async def test_invalid_registration_names_the_field(
    world: World, change: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await world.registry.register(OPERATOR, replace(REG, **change))  # type: ignore[arg-type]
    assert info.value.field == field


async def test_only_operators_register(world: World) -> None:
    with pytest.raises(PermissionDenied):
        await world.registry.register(ADMIN_A, REG)


async def test_admins_list_only_their_own_account(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    assert [p.product_id for p in await world.registry.list(ADMIN_A, "acct-a")] == [
        product.product_id
    ]
    with pytest.raises(NotFound):
        await world.registry.list(ADMIN_B, "acct-a")
    with pytest.raises(NotFound):
        await world.registry.get(ADMIN_B, product.product_id)


async def test_rotate_disable_enable_deregister(world: World) -> None:
    product, first = await world.registry.register(OPERATOR, REG)
    rotated, second = await world.registry.rotate_credentials(OPERATOR, product.product_id)
    assert second.password != first.password
    assert rotated.credentials_version == 2 and rotated.version == 2
    assert rotated.client_cert_sha256 != product.client_cert_sha256
    disabled = await world.registry.set_state(OPERATOR, product.product_id, State.DISABLED)
    assert disabled.state is State.DISABLED
    enabled = await world.registry.set_state(OPERATOR, product.product_id, State.ACTIVE)
    gone = await world.registry.set_state(OPERATOR, product.product_id, State.DEREGISTERED)
    assert (enabled.state, gone.state) == (State.ACTIVE, State.DEREGISTERED)
    with pytest.raises(FailedPrecondition, match="deregistered"):
        await world.registry.set_state(OPERATOR, product.product_id, State.ACTIVE)
    assert [s.version for s in world.publisher.snapshots] == [1, 2, 3, 4, 5]


async def test_a_second_product_may_use_a_recorded_registration_email(world: World) -> None:
    world.accounts.items["acct-a"] = replace(
        world.accounts.items["acct-a"], managed_by_email="new-owner@a.example"
    )
    world.products.items.clear()
    with pytest.raises(FailedPrecondition):
        await world.registry.register(OPERATOR, REG)
    await world.registry.register(OPERATOR, replace(REG, registration_email="new-owner@a.example"))
    world.accounts.items["acct-a"] = replace(
        world.accounts.items["acct-a"], managed_by_email="third@a.example"
    )
    await world.registry.register(OPERATOR, replace(REG, registration_email="NEW-owner@a.example"))


async def test_a_retried_state_change_publishes_what_the_failed_publication_did_not(
    world: World,
) -> None:
    """Stored, then Kafka failed: the operator's retry finds the state already stored and
    must still publish it, or other services think the product active forever."""
    product, _ = await world.registry.register(OPERATOR, REG)
    world.publisher.fail_snapshots = True
    with pytest.raises(Unavailable):
        await world.registry.set_state(OPERATOR, product.product_id, State.DEREGISTERED)
    assert world.products.items[product.product_id].state is State.DEREGISTERED
    world.publisher.fail_snapshots = False
    again = await world.registry.set_state(OPERATOR, product.product_id, State.DEREGISTERED)
    last = world.publisher.snapshots[-1]
    assert (last.state, last.version) == (State.DEREGISTERED, again.version)


async def test_a_retried_rotation_publishes_a_newer_snapshot(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    world.publisher.fail_snapshots = True
    with pytest.raises(Unavailable):
        await world.registry.rotate_credentials(OPERATOR, product.product_id)
    world.publisher.fail_snapshots = False
    rotated, _ = await world.registry.rotate_credentials(OPERATOR, product.product_id)
    assert world.publisher.snapshots[-1].version == rotated.version == 3


async def test_a_retried_registration_returns_the_stored_product_with_fresh_credentials(
    world: World,
) -> None:
    """Stored, then Kafka failed: the retry (same request id) must not register a second
    product; the first attempt's credentials never reached the operator, so new ones."""
    reg = replace(REG, request_id="op-42:reg-1")
    world.publisher.fail_snapshots = True
    with pytest.raises(Unavailable):
        await world.registry.register(OPERATOR, reg)
    [stored] = world.products.items.values()
    world.publisher.fail_snapshots = False
    product, creds = await world.registry.register(OPERATOR, reg)
    assert list(world.products.items) == [stored.product_id] == [product.product_id]
    assert product.credentials_version == stored.credentials_version + 1
    assert world.hasher.verify(product.password_hash, creds.password)
    assert not world.hasher.verify(stored.password_hash, creds.password)
    assert [(s.product_id, s.version) for s in world.publisher.snapshots] == [
        (product.product_id, product.version)
    ]
    # a retry after a lost response (the first attempt did publish) is just as safe
    again, _ = await world.registry.register(OPERATOR, reg)
    assert list(world.products.items) == [product.product_id]
    assert world.publisher.snapshots[-1].version == again.version == product.version + 1


async def test_registrations_without_a_request_id_or_with_new_ones_are_new_products(
    world: World,
) -> None:
    a, _ = await world.registry.register(OPERATOR, REG)
    b, _ = await world.registry.register(OPERATOR, REG)
    c, _ = await world.registry.register(OPERATOR, replace(REG, request_id="r1"))
    d, _ = await world.registry.register(OPERATOR, replace(REG, request_id="r2"))
    assert len({a.product_id, b.product_id, c.product_id, d.product_id}) == 4


async def test_a_request_id_names_one_registration_per_account(world: World) -> None:
    reg = replace(REG, request_id="r1")
    first, _ = await world.registry.register(OPERATOR, reg)
    with pytest.raises(FailedPrecondition, match="different registration"):
        await world.registry.register(OPERATOR, replace(reg, name="another appliance"))
    other, _ = await world.registry.register(
        OPERATOR, replace(reg, account_id="acct-b", registration_email="owner@b.example")
    )
    assert other.product_id != first.product_id and other.account_id == "acct-b"
    await world.registry.set_state(OPERATOR, first.product_id, State.DEREGISTERED)
    with pytest.raises(FailedPrecondition, match="deregistered"):
        await world.registry.register(OPERATOR, reg)


@pytest.mark.parametrize("request_id", ["x" * 65, "has space", "semi;colon"])
async def test_a_malformed_request_id_is_refused(world: World, request_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await world.registry.register(OPERATOR, replace(REG, request_id=request_id))
    assert info.value.field == "request_id"
    assert world.products.items == {}


async def test_an_update_changes_settings_in_place_and_publishes_the_next_version(
    world: World,
) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    update = ProductUpdate(name=" TDA renamed ", heartbeat_interval_seconds=60)
    updated = await world.registry.update(OPERATOR, product.product_id, update, product.version)
    assert (updated.name, updated.heartbeat_interval_seconds) == ("TDA renamed", 60)
    assert updated.version == product.version + 1
    # everything else as it was: the credentials still work
    assert updated.upload_frequency_seconds == product.upload_frequency_seconds
    assert updated.password_hash == product.password_hash
    assert world.hasher.verify(updated.password_hash, creds.password)
    assert world.products.items[product.product_id] == updated
    assert [s.version for s in world.publisher.snapshots] == [1, 2]


async def test_an_update_that_changes_nothing_publishes_the_stored_snapshot_again(
    world: World,
) -> None:
    """A retry after a failed publication: stored, so nothing changes, but it is published."""
    product, _ = await world.registry.register(OPERATOR, REG)
    world.publisher.fail_snapshots = True
    with pytest.raises(Unavailable):
        await world.registry.update(OPERATOR, product.product_id, ProductUpdate(name="New"))
    world.publisher.fail_snapshots = False
    again = await world.registry.update(OPERATOR, product.product_id, ProductUpdate(name="New"))
    assert again.version == 2 and world.publisher.snapshots[-1].name == "New"


async def test_an_update_is_refused_for_stale_versions_bad_values_others_and_the_deregistered(
    world: World,
) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    pid = product.product_id
    await world.registry.update(OPERATOR, pid, ProductUpdate(name="first"))
    with pytest.raises(FailedPrecondition, match="version 2, not 1"):
        await world.registry.update(OPERATOR, pid, ProductUpdate(name="second"), 1)
    for bad, field in (
        (ProductUpdate(name=""), "name"),
        (ProductUpdate(upload_frequency_seconds=5), "upload_frequency_seconds"),
        (ProductUpdate(download_bandwidth=10), "download_bandwidth_bytes_per_second"),
        (ProductUpdate(heartbeat_interval_seconds=5), "heartbeat_interval_seconds"),
    ):
        with pytest.raises(InvalidArgument) as info:
            await world.registry.update(OPERATOR, pid, bad)
        assert info.value.field == field
    with pytest.raises(PermissionDenied):
        await world.registry.update(ADMIN_A, pid, ProductUpdate(name="mine"))
    await world.registry.set_state(OPERATOR, pid, State.DEREGISTERED)
    with pytest.raises(FailedPrecondition, match="deregistered"):
        await world.registry.update(OPERATOR, pid, ProductUpdate(name="late"))
    assert world.products.items[pid].name == "first"

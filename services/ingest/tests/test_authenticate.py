"""Product authentication: reasons, the verification cache, throttling per source."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tmsp_ingest.domain.products import Refusal, State
from tmsp_ingest.service_layer.authenticate import AuthenticationFailed
from tmsp_ingest.testing import OPERATOR, REG, World


async def test_good_password_then_cache_avoids_rehashing(world: World) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    world.hasher.verifications = 0
    who = await world.auth.with_password(creds.user_name, creds.password, "10.0.0.1")
    assert who.product.product_id == product.product_id
    await world.auth.with_password(creds.user_name, creds.password, "10.0.0.1")
    assert world.hasher.verifications == 1
    world.clock.advance(31)
    await world.auth.with_password(creds.user_name, creds.password, "10.0.0.1")
    assert world.hasher.verifications == 2


async def test_cache_does_not_accept_a_wrong_password(world: World) -> None:
    _, creds = await world.registry.register(OPERATOR, REG)
    await world.auth.with_password(creds.user_name, creds.password, "s")
    with pytest.raises(AuthenticationFailed) as info:
        await world.auth.with_password(creds.user_name, creds.password + "x", "s")
    assert info.value.reason == Refusal.BAD_CREDENTIALS


async def test_rotation_invalidates_the_cache(world: World) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    await world.auth.with_password(creds.user_name, creds.password, "s")
    await world.registry.rotate_credentials(OPERATOR, product.product_id)
    with pytest.raises(AuthenticationFailed, match="bad credentials"):
        await world.auth.with_password(creds.user_name, creds.password, "s")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("disable", Refusal.PRODUCT_DISABLED),
        ("expire", Refusal.ACCOUNT_EXPIRED),
        ("delete", Refusal.ACCOUNT_DELETED),
    ],
)
async def test_standing_reasons_are_exact(world: World, setup: str, reason: str) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    if setup == "disable":
        await world.registry.set_state(OPERATOR, product.product_id, State.DISABLED)
    elif setup == "expire":
        world.clock.advance(timedelta(days=31))
    else:
        world.accounts.items["acct-a"] = replace(world.accounts.items["acct-a"], deleted=True)
    with pytest.raises(AuthenticationFailed) as info:
        await world.auth.with_password(creds.user_name, creds.password, "s")
    assert info.value.reason == reason


async def test_failures_are_throttled_per_source(world: World) -> None:
    _, creds = await world.registry.register(OPERATOR, REG)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match="bad credentials"):
            await world.auth.with_password(creds.user_name, "wrong", "10.9.9.9")
    with pytest.raises(AuthenticationFailed) as info:
        await world.auth.with_password(creds.user_name, creds.password, "10.9.9.9")
    assert info.value.reason == Refusal.TOO_MANY_FAILURES and info.value.retry_after > 0
    await world.auth.with_password(creds.user_name, creds.password, "10.0.0.2")
    world.clock.advance(61)
    await world.auth.with_password(creds.user_name, creds.password, "10.9.9.9")


async def test_unknown_user_is_bad_credentials(world: World) -> None:
    with pytest.raises(AuthenticationFailed, match="bad credentials"):
        await world.auth.with_password("nobody", "pw", "s")


async def test_public_key_and_certificate(world: World) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    product, _ = await world.registry.register(OPERATOR, replace(REG, ssh_public_key=key))
    who = await world.auth.with_public_key(product.user_name, key + " laptop", "s")
    assert who.product.product_id == product.product_id
    with pytest.raises(AuthenticationFailed):
        await world.auth.with_public_key(product.user_name, key[:-4] + "AAAA", "s")
    await world.auth.with_certificate(product.product_id, product.client_cert_sha256, "s")
    rotated, _ = await world.registry.rotate_credentials(OPERATOR, product.product_id)
    with pytest.raises(AuthenticationFailed, match="bad credentials"):
        await world.auth.with_certificate(product.product_id, product.client_cert_sha256, "s")
    await world.auth.with_certificate(product.product_id, rotated.client_cert_sha256, "s")

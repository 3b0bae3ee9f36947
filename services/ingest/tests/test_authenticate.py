"""Product authentication: reasons, the verification cache, throttling per source."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tmsp_ingest.domain.products import Refusal, State
from tmsp_ingest.service_layer.authenticate import AuthenticationFailed, SessionStanding
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


LOSSES = pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("rotate", Refusal.BAD_CREDENTIALS),
        ("disable", Refusal.PRODUCT_DISABLED),
        ("deregister", Refusal.PRODUCT_DEREGISTERED),
        ("delete account", Refusal.ACCOUNT_DELETED),
        ("expire account", Refusal.ACCOUNT_EXPIRED),
    ],
)


async def lose_standing(world: World, product_id: str, change: str) -> None:
    if change == "rotate":
        await world.registry.rotate_credentials(OPERATOR, product_id)
    elif change in ("disable", "deregister"):
        state = State.DISABLED if change == "disable" else State.DEREGISTERED
        await world.registry.set_state(OPERATOR, product_id, state)
    elif change == "delete account":
        world.accounts.items["acct-a"] = replace(world.accounts.items["acct-a"], deleted=True)
    else:
        world.clock.advance(timedelta(days=31))


@LOSSES
async def test_standing_reasons_are_exact(world: World, change: str, reason: str) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    await lose_standing(world, product.product_id, change)
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


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


async def test_a_public_key_probe_does_not_clear_the_failed_logins(world: World) -> None:
    """The key is public: accepting it ("would you accept this key?") proves nothing, so it
    must not reset the throttle an attacker guessing passwords runs into."""
    product, creds = await world.registry.register(OPERATOR, replace(REG, ssh_public_key=KEY))
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            await world.auth.with_password(creds.user_name, "guess", "10.6.6.6")
    await world.auth.with_public_key(product.user_name, KEY, "10.6.6.6")
    with pytest.raises(AuthenticationFailed):
        await world.auth.with_password(creds.user_name, "guess", "10.6.6.6")
    with pytest.raises(AuthenticationFailed) as info:
        await world.auth.with_password(creds.user_name, creds.password, "10.6.6.6")
    assert info.value.reason == Refusal.TOO_MANY_FAILURES
    world.auth.succeeded("10.6.6.6")  # what the SSH server calls once the signature verified
    await world.auth.with_password(creds.user_name, creds.password, "10.6.6.6")


@LOSSES
async def test_an_open_session_loses_its_standing(world: World, change: str, reason: str) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    who = await world.auth.with_certificate(product.product_id, product.client_cert_sha256, "s")
    standing = SessionStanding(world.auth, who, "syslog-tls")
    assert (await standing.confirm()).product.product_id == product.product_id
    await lose_standing(world, product.product_id, change)
    with pytest.raises(AuthenticationFailed) as info:
        await standing.confirm()
    assert info.value.reason == reason
    assert world.auth.failures == 0  # no login attempt, nothing counted against the source


async def test_a_password_session_is_ended_by_a_rotation_and_sees_other_changes(
    world: World,
) -> None:
    product, creds = await world.registry.register(OPERATOR, REG)
    who = await world.auth.with_password(creds.user_name, creds.password, "s")
    standing = SessionStanding(world.auth, who, "sftp")
    world.products.items[product.product_id] = product.changed(
        world.clock.now(), upload_bandwidth=4096
    )
    assert (await standing.confirm()).product.upload_bandwidth == 4096
    await world.registry.rotate_credentials(OPERATOR, product.product_id)
    with pytest.raises(AuthenticationFailed, match="bad credentials"):
        await standing.confirm()


async def test_the_standing_is_asked_again_at_most_every_few_seconds(world: World) -> None:
    product, _ = await world.registry.register(OPERATOR, REG)
    who = await world.auth.with_certificate(product.product_id, product.client_cert_sha256, "s")
    standing = SessionStanding(world.auth, who, "syslog-tls", every=5.0)
    await world.registry.set_state(OPERATOR, product.product_id, State.DISABLED)
    world.clock.advance(4)
    await standing.confirm()  # within the documented bound: not asked yet
    world.clock.advance(1)
    with pytest.raises(AuthenticationFailed, match="product disabled"):
        await standing.confirm()

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tmsp_common.authn import Principal, Role
from tmsp_common.clock import FakeClock
from tmsp_common.errors import NotFound, PermissionDenied, Unauthenticated
from tmsp_common.tokens import JwtVerifier, TokenSigner, public_pem, static_keys

ANALYST = Principal("u1", "acct-a", frozenset({Role.ANALYST}), "s1", ("pwd", "otp"))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def test_a_signed_token_verifies_to_the_same_principal(key: Ed25519PrivateKey) -> None:
    clock = FakeClock()
    token = TokenSigner(key, "k1", clock=clock).issue(ANALYST)
    verifier = JwtVerifier(static_keys({"k1": public_pem(key)}), clock=clock)
    assert await verifier.verify(token) == ANALYST


async def test_expired_token_is_rejected(key: Ed25519PrivateKey) -> None:
    clock = FakeClock()
    token = TokenSigner(key, "k1", clock=clock, ttl=timedelta(minutes=5)).issue(ANALYST)
    verifier = JwtVerifier(static_keys({"k1": public_pem(key)}), clock=clock)
    clock.advance(timedelta(minutes=5, seconds=6))
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(token)


async def test_token_of_another_key_or_tampered_is_rejected(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    forged = TokenSigner(other, "k1").issue(ANALYST)
    verifier = JwtVerifier(static_keys({"k1": public_pem(key)}))
    with pytest.raises(Unauthenticated):
        await verifier.verify(forged)
    good = TokenSigner(key, "k1").issue(ANALYST)
    head, body, sig = good.split(".")
    with pytest.raises(Unauthenticated):
        await verifier.verify(f"{head}.{body}x.{sig}")
    with pytest.raises(Unauthenticated):
        await verifier.verify("not a token")


async def test_unknown_kid_refreshes_the_key_set_once(key: Ed25519PrivateKey) -> None:
    calls = 0
    keys: dict[str, bytes] = {}

    async def source() -> dict[str, bytes]:
        nonlocal calls
        calls += 1
        return dict(keys)

    verifier = JwtVerifier(source, min_refresh_interval_s=0)
    await verifier.refresh()
    keys["k2"] = public_pem(key)  # rotation: a new key appears at the source
    token = TokenSigner(key, "k2").issue(ANALYST)
    assert (await verifier.verify(token)).user_id == "u1"
    assert calls == 2


def test_tenant_scoping_hides_foreign_accounts() -> None:
    ANALYST.require_account("acct-a")
    with pytest.raises(NotFound):
        ANALYST.require_account("acct-b")
    operator = Principal("op", "provider", frozenset({Role.PROVIDER_OPERATOR}))
    operator.require_account("acct-b")


def test_roles() -> None:
    with pytest.raises(PermissionDenied):
        ANALYST.require_role(Role.ACCOUNT_ADMINISTRATOR)
    assert not ANALYST.can_write()
    admin = Principal("u2", "acct-a", frozenset({Role.ACCOUNT_ADMINISTRATOR}))
    admin.require_role(Role.ACCOUNT_ADMINISTRATOR)
    assert admin.can_write()

"""Auth through its real gRPC API, run as deployed (subprocess), on real FerretDB and Kafka.

One service process per module (argon2id at cheaper, still valid parameters via
TMSP_AUTH_ARGON2_MEMORY_KIB); each test makes its own users through the API (invite ->
emailed link read from Kafka -> ResetPassword), so tests do not depend on each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyotp
import pytest

from tmsp.auth.v1 import auth_pb2
from tmsp.events.v1 import accounts_pb2
from tmsp.events.v1 import auth_pb2 as audit_pb2
from tmsp.events.v1 import notifications_pb2 as n_pb2
from tmsp_auth.testing import (
    AuthClient,
    Mailbox,
    code_for_step,
    error_of,
    md,
    new_password,
    run_cli,
    secret_from_uri,
    service_env,
    start_service,
)
from tmsp_common.kafka.envelope import unwrap
from tmsp_common.kafka.topics import ACCOUNTS, AUTH_AUDIT
from tmsp_common.testing import (
    Infra,
    ServiceProcess,
    TopicReader,
    free_port,
    unique,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.grpc,
    pytest.mark.tls,
]

OPERATOR_EMAIL = "Operator@Provider.example"
OPERATOR_PASSWORD = "operator-passphrase-42"
K = n_pb2.NotificationKind


@dataclass
class Deployment:
    env: dict[str, str]
    prefix: str
    infra: Infra
    proc: ServiceProcess
    target: str
    tls_dir: str


@pytest.fixture(scope="module")
def deployment(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    prefix = f"{unique('itauth')}."
    tls_dir = tmp_path_factory.mktemp("tls")
    env = service_env(infra.env(), prefix, prefix.rstrip(".") + "_auth", Path(tls_dir))
    out = run_cli(
        env,
        ["bootstrap-operator", "--email", OPERATOR_EMAIL, "--password-stdin"],
        OPERATOR_PASSWORD,
    )
    assert "provider operator created" in out
    again = run_cli(
        env, ["bootstrap-operator", "--email", OPERATOR_EMAIL, "--password-stdin"], "ignored"
    )
    assert "unchanged" in again  # idempotent
    proc = start_service(env)
    try:
        yield Deployment(
            env, prefix, infra, proc, f"localhost:{env['TMSP_AUTH_GRPC_PORT']}", str(tls_dir)
        )
    finally:
        code = proc.terminate()
        assert code == 0, proc.logs[-3000:]


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[AuthClient]:
    c = AuthClient(deployment.target, deployment.tls_dir)
    yield c
    await c.close()


@pytest.fixture
async def mail(deployment: Deployment) -> AsyncIterator[Mailbox]:
    async with Mailbox(deployment.infra.kafka_bootstrap, deployment.prefix) as box:
        yield box


async def operator(client: AuthClient) -> auth_pb2.Session:
    return await client.session(OPERATOR_EMAIL.lower(), OPERATOR_PASSWORD)


async def new_account(client: AuthClient, op: auth_pb2.Session) -> auth_pb2.Account:
    name = unique("Acct ")
    response = await client.accounts.CreateAccount(
        auth_pb2.CreateAccountRequest(
            account=auth_pb2.Account(name=name, company_name=f"{name} Ltd", time_zone="UTC")
        ),
        metadata=md(op),
    )
    account: auth_pb2.Account = response.account
    return account


async def new_user(
    client: AuthClient,
    mail: Mailbox,
    caller: auth_pb2.Session,
    account_id: str,
    role: auth_pb2.Role.ValueType = auth_pb2.ROLE_ACCOUNT_ADMINISTRATOR,
) -> tuple[str, str, str]:
    """Invite a user, accept the emailed link; returns (user_id, email, password)."""
    email = f"{unique('user')}@Example.com"
    created = await client.accounts.CreateUser(
        auth_pb2.CreateUserRequest(
            account_id=account_id, email=email, display_name="Test User", roles=[role]
        ),
        metadata=md(caller),
    )
    invite = await mail.next(K.NOTIFICATION_KIND_PASSWORD_RESET, email)
    assert invite.params["invite"] == "true"
    token = invite.params["reset_url"].rsplit("token=", 1)[1]
    password = new_password()
    await client.auth.ResetPassword(
        auth_pb2.ResetPasswordRequest(token=token, new_password=password)
    )
    return created.user.user_id, email, password


async def provision(
    client: AuthClient, mail: Mailbox, session: auth_pb2.Session, email: str
) -> auth_pb2.ConfirmSetupCodeResponse:
    """Seed 000 steps 5-7: confirmation email, its code, the new device's provisioning."""
    await client.auth.SendConfirmationEmail(
        auth_pb2.SendConfirmationEmailRequest(), metadata=md(session)
    )
    note = await mail.next(K.NOTIFICATION_KIND_CONFIRMATION_CODE, email)
    prov: auth_pb2.ConfirmSetupCodeResponse = await client.auth.ConfirmSetupCode(
        auth_pb2.ConfirmSetupCodeRequest(confirmation_code=note.params["code"]),
        metadata=md(session),
    )
    return prov


async def enable_2fa(
    client: AuthClient, mail: Mailbox, session: auth_pb2.Session, email: str
) -> tuple[str, list[str], str]:
    """Seed 000 steps 4-8; returns (secret, recovery codes, the enrolment code used)."""
    prov = await provision(client, mail, session, email)
    secret = secret_from_uri(prov.otpauth_uri)
    code = code_for_step(secret, 0)
    enabled = await client.auth.EnableTwoFactor(
        auth_pb2.EnableTwoFactorRequest(totp_code=code), metadata=md(session)
    )
    return secret, list(enabled.recovery_codes), code


async def setup_user(client: AuthClient, mail: Mailbox) -> tuple[auth_pb2.Session, str, str, str]:
    op = await operator(client)
    account = await new_account(client, op)
    user_id, email, password = await new_user(client, mail, op, account.account_id)
    return op, user_id, email, password


async def audit_events(
    deployment: Deployment, count_at_least: int = 1
) -> list[audit_pb2.AuthAuditEvent]:
    """Every audit event so far (all were acknowledged before the RPCs answered)."""
    async with TopicReader(deployment.infra.kafka_bootstrap, AUTH_AUDIT, deployment.prefix) as r:
        await r.read_until(lambda rs: len(rs) >= count_at_least, timeout=20)
        drain_until = time.monotonic() + 1.5
        await r.read_until(lambda _rs: time.monotonic() > drain_until, timeout=10)
        return [unwrap(x.value, audit_pb2.AuthAuditEvent)[1] for x in r.records]


# -- seed 000: the whole two-factor story ----------------------------------------------


async def test_seed_000_two_factor_flow_with_pyotp(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    _op, user_id, email, password = await setup_user(client, mail)

    # 1-2. After the credentials: the "enable 2FA?" screen, following the user's choice.
    first = await client.login(email.upper(), password)  # email is case-insensitive
    assert first.HasField("session") and first.offer_two_factor_setup
    session = first.session
    await client.auth.SetTwoFactorPrompt(  # "Continue to 2FA Settings": asked until enabled
        auth_pb2.SetTwoFactorPromptRequest(choice=auth_pb2.TWO_FACTOR_PROMPT_CONTINUE_TO_SETTINGS),
        metadata=md(session),
    )
    assert (await client.login(email, password)).offer_two_factor_setup
    err = await error_of(
        lambda: client.auth.SetTwoFactorPrompt(
            auth_pb2.SetTwoFactorPromptRequest(), metadata=md(session)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.trailing_metadata() or ()).get("field") == "choice"
    await client.auth.SetTwoFactorPrompt(
        auth_pb2.SetTwoFactorPromptRequest(choice=auth_pb2.TWO_FACTOR_PROMPT_SKIP_FOR_NOW),
        metadata=md(session),
    )
    assert (await client.login(email, password)).offer_two_factor_setup  # skip: this time only
    await client.auth.SetTwoFactorPrompt(
        auth_pb2.SetTwoFactorPromptRequest(choice=auth_pb2.TWO_FACTOR_PROMPT_DO_NOT_SHOW_AGAIN),
        metadata=md(session),
    )
    assert not (await client.login(email, password)).offer_two_factor_setup

    # 5-6. "Send Confirmation Email": the code reaches Kafka before the RPC answers.
    sent = await client.auth.SendConfirmationEmail(
        auth_pb2.SendConfirmationEmailRequest(), metadata=md(session)
    )
    assert sent.HasField("expires_at")
    note = await mail.next(K.NOTIFICATION_KIND_CONFIRMATION_CODE, email, timeout=5)
    code = note.params["code"]
    wrong = "00000000" if code != "00000000" else "11111111"
    err = await error_of(
        lambda: client.auth.ConfirmSetupCode(
            auth_pb2.ConfirmSetupCodeRequest(confirmation_code=wrong), metadata=md(session)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    prov = await client.auth.ConfirmSetupCode(
        auth_pb2.ConfirmSetupCodeRequest(confirmation_code=code), metadata=md(session)
    )
    err = await error_of(  # the confirmation code is single use
        lambda: client.auth.ConfirmSetupCode(
            auth_pb2.ConfirmSetupCodeRequest(confirmation_code=code), metadata=md(session)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    # 7. The provisioning Google Authenticator honours.
    totp = pyotp.parse_uri(prov.otpauth_uri)
    assert isinstance(totp, pyotp.TOTP) and totp.digits == 6 and totp.interval == 30
    assert prov.otpauth_uri.startswith("otpauth://totp/TMSP:") and "issuer=TMSP" in prov.otpauth_uri
    assert len(prov.secret_base32) == 32 and prov.qr_png.startswith(b"\x89PNG")
    assert "<svg" in prov.qr_svg

    # 8. The first code enables 2FA; recovery codes are shown once.
    enrol_code = code_for_step(prov.secret_base32, 0)
    enabled = await client.auth.EnableTwoFactor(
        auth_pb2.EnableTwoFactorRequest(totp_code=enrol_code), metadata=md(session)
    )
    assert len(enabled.recovery_codes) == 10
    await mail.next(K.NOTIFICATION_KIND_TWO_FACTOR_ENABLED, email)

    # Login now needs the second factor; the enrolment code cannot be replayed.
    challenge = await client.login(email, password)
    assert challenge.challenge_id and not challenge.HasField("session")
    err = await error_of(
        lambda: client.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(
                challenge_id=challenge.challenge_id, totp_code=enrol_code
            )
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # The next step's code (within the +-1 window) works once, and only once.
    next_code = code_for_step(prov.secret_base32, 1)
    verified = await client.auth.VerifySecondFactor(
        auth_pb2.VerifySecondFactorRequest(challenge_id=challenge.challenge_id, totp_code=next_code)
    )
    assert verified.session.user_id == user_id
    again = await client.login(email, password)
    err = await error_of(
        lambda: client.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(challenge_id=again.challenge_id, totp_code=next_code)
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # Disable 2FA when logged in, after re-authentication.
    err = await error_of(
        lambda: client.auth.DisableTwoFactor(
            auth_pb2.DisableTwoFactorRequest(current_password="wrong-password-xyz"),
            metadata=md(verified.session),
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    await client.auth.DisableTwoFactor(
        auth_pb2.DisableTwoFactorRequest(current_password=password), metadata=md(verified.session)
    )
    await mail.next(K.NOTIFICATION_KIND_TWO_FACTOR_DISABLED, email)
    assert (await client.login(email, password)).HasField("session")

    kinds = {(e.kind, e.user_id) for e in await audit_events(deployment, 5)}
    A = audit_pb2.AuthAuditKind
    for kind in (
        A.AUTH_AUDIT_KIND_TWO_FACTOR_ENABLED,
        A.AUTH_AUDIT_KIND_TWO_FACTOR_DISABLED,
        A.AUTH_AUDIT_KIND_SECOND_FACTOR_FAILED,
        A.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED,
    ):
        assert (kind, user_id) in kinds


async def test_change_device_keeps_the_old_device_until_confirmed(
    client: AuthClient, mail: Mailbox
) -> None:
    _op, _uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    # Enrol with the previous step's code, so two fresh steps remain in the +-1 window.
    prov = await provision(client, mail, session, email)
    old_secret = prov.secret_base32
    await client.auth.EnableTwoFactor(
        auth_pb2.EnableTwoFactorRequest(totp_code=code_for_step(old_secret, -1)),
        metadata=md(session),
    )
    # ChangeDevice before a new device is provisioned is refused.
    err = await error_of(
        lambda: client.auth.ChangeDevice(
            auth_pb2.ChangeDeviceRequest(totp_code="123456"), metadata=md(session)
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    await asyncio.sleep(2.1)  # the resend interval (2 s in these tests)
    new_prov = await provision(client, mail, session, email)
    assert new_prov.secret_base32 != old_secret
    # Not confirmed yet: the old device still completes a login.
    challenge = await client.login(email, password)
    verified = await client.auth.VerifySecondFactor(
        auth_pb2.VerifySecondFactorRequest(
            challenge_id=challenge.challenge_id, totp_code=code_for_step(old_secret, 0)
        )
    )
    assert verified.session.access_token
    # A code of the old device does not confirm the new one.
    err = await error_of(
        lambda: client.auth.ChangeDevice(
            auth_pb2.ChangeDeviceRequest(totp_code=code_for_step(old_secret, 1)),
            metadata=md(session),
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    await client.auth.ChangeDevice(
        auth_pb2.ChangeDeviceRequest(totp_code=code_for_step(new_prov.secret_base32, 1)),
        metadata=md(session),
    )
    await mail.next(K.NOTIFICATION_KIND_TWO_FACTOR_DEVICE_CHANGED, email)


# -- lockout ---------------------------------------------------------------------------


async def test_50_concurrent_wrong_passwords_count_exactly_the_threshold(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    op, user_id, email, password = await setup_user(client, mail)

    async def wrong(i: int) -> grpc.aio.AioRpcError:
        return await error_of(lambda: client.login(email, f"wrong-password-{i:04d}"))

    errors = await asyncio.gather(*(wrong(i) for i in range(50)))
    assert {(e.code(), e.details()) for e in errors} == {
        (grpc.StatusCode.UNAUTHENTICATED, "invalid email or password")
    }
    # Locked: even the right password is refused, with the very same answer.
    err = await error_of(lambda: client.login(email, password))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid email or password",
    )
    await mail.next(K.NOTIFICATION_KIND_ACCOUNT_LOCKED, email)
    events = [e for e in await audit_events(deployment, 10) if e.user_id == user_id]
    A = audit_pb2.AuthAuditKind
    checked = [
        e
        for e in events
        if e.kind == A.AUTH_AUDIT_KIND_LOGIN_FAILED and e.detail == "wrong password"
    ]
    assert len(checked) == 5  # exactly the threshold got a password check
    assert sum(e.kind == A.AUTH_AUDIT_KIND_LOCKED_OUT for e in events) == 1
    users = await client.accounts.ListUsers(
        auth_pb2.ListUsersRequest(account_id=events[0].account_id), metadata=md(op)
    )
    locked = next(u for u in users.users if u.user_id == user_id)
    assert locked.HasField("locked_until")
    await client.accounts.UnlockUser(auth_pb2.UnlockUserRequest(user_id=user_id), metadata=md(op))
    assert (await client.login(email, password)).HasField("session")


async def test_logins_cut_off_by_a_short_deadline_lock_only_for_a_while(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    """Login calls whose deadline expires while the server hashes the password (the
    handler is cancelled) count as failures: a visible lockout that ends, never a user
    who can no longer log in. A replica with a costly hash, a 3-second lockout and a
    1-second lease; its first login rehashes the password to its parameters."""
    op, user_id, email, password = await setup_user(client, mail)
    env = {
        **deployment.env,
        "TMSP_AUTH_GRPC_PORT": str(free_port()),
        "TMSP_AUTH_ARGON2_MEMORY_KIB": "65536",
        "TMSP_AUTH_ARGON2_TIME_COST": "6",
        "TMSP_AUTH_LOCKOUT_MINUTES": "0.05",
        "TMSP_AUTH_LOCKOUT_LEASE_SECONDS": "1",
    }
    replica = start_service(env)
    costly = AuthClient(f"localhost:{env['TMSP_AUTH_GRPC_PORT']}", deployment.tls_dir)

    async def locked_until() -> float:
        users = await client.accounts.ListUsers(
            auth_pb2.ListUsersRequest(account_id=session.account_id), metadata=md(op)
        )
        found = next(u for u in users.users if u.user_id == user_id)
        return found.locked_until.ToNanoseconds() / 1e9 if found.HasField("locked_until") else 0.0

    async def cut_off(wrong: str) -> grpc.aio.AioRpcError:
        request = auth_pb2.LoginRequest(email=email, password=wrong)
        return await error_of(lambda: costly.auth.Login(request, timeout=0.1))

    try:
        session = await costly.session(email, password)  # rehashed to the replica's cost
        for i in range(20):
            err = await cut_off(f"wrong-{i:03d}-password")
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            if await locked_until():
                break
        until = await locked_until()
        assert until, "interrupted attempts never locked the user"
        await asyncio.sleep(max(0.0, until - time.time()) + 0.5)
        assert (await costly.login(email, password)).HasField("session")
    finally:
        await costly.close()
        assert replica.terminate() == 0, replica.logs[-3000:]


# -- emergency and recovery codes ------------------------------------------------------


async def test_emergency_and_recovery_codes_are_single_use(
    client: AuthClient, mail: Mailbox
) -> None:
    _op, _uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    _secret, recovery, _ = await enable_2fa(client, mail, session, email)

    challenge = await client.login(email, password)
    await client.auth.RequestEmergencyCode(
        auth_pb2.RequestEmergencyCodeRequest(challenge_id=challenge.challenge_id)
    )
    err = await error_of(  # rate limited
        lambda: client.auth.RequestEmergencyCode(
            auth_pb2.RequestEmergencyCodeRequest(challenge_id=challenge.challenge_id)
        )
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    code = (await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE, email)).params["code"]
    ok = await client.auth.VerifySecondFactor(
        auth_pb2.VerifySecondFactorRequest(challenge_id=challenge.challenge_id, emergency_code=code)
    )
    assert ok.session.access_token
    await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE_USED, email)
    second = await client.login(email, password)
    err = await error_of(
        lambda: client.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(
                challenge_id=second.challenge_id, emergency_code=code
            )
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    used = await client.auth.VerifySecondFactor(
        auth_pb2.VerifySecondFactorRequest(
            challenge_id=second.challenge_id, recovery_code=recovery[0]
        )
    )
    assert used.recovery_codes_left == len(recovery) - 1
    await mail.next(K.NOTIFICATION_KIND_RECOVERY_CODE_USED, email)
    third = await client.login(email, password)
    err = await error_of(
        lambda: client.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(
                challenge_id=third.challenge_id, recovery_code=recovery[0]
            )
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


# -- sessions --------------------------------------------------------------------------


async def test_refresh_token_reuse_revokes_the_session(client: AuthClient, mail: Mailbox) -> None:
    _op, _uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    rotated = await client.auth.Refresh(
        auth_pb2.RefreshRequest(refresh_token=session.refresh_token)
    )
    assert rotated.session.refresh_token != session.refresh_token
    assert rotated.session.session_id == session.session_id
    err = await error_of(
        lambda: client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # The whole session is gone: the newest refresh token and the access token too.
    err = await error_of(
        lambda: client.auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=rotated.session.refresh_token)
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await error_of(
        lambda: client.auth.Logout(auth_pb2.LogoutRequest(), metadata=md(rotated.session))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_signing_keys_verify_issued_tokens(client: AuthClient, mail: Mailbox) -> None:
    from tmsp_common.auth_keys import grpc_key_source
    from tmsp_common.tokens import JwtVerifier

    _op, user_id, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    verifier = JwtVerifier(grpc_key_source(client.target, tls=True, tls_dir=client.tls_dir))
    principal = await verifier.verify(session.access_token)
    assert principal.user_id == user_id and principal.factors == ("pwd",)


# -- passwords -------------------------------------------------------------------------


async def test_reset_does_not_bypass_two_factor(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    _op, uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    await enable_2fa(client, mail, session, email)
    await client.auth.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=email))
    link = (await mail.next(K.NOTIFICATION_KIND_PASSWORD_RESET, email)).params["reset_url"]
    token = link.rsplit("token=", 1)[1]
    err = await error_of(
        lambda: client.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password="short")
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # and the token is still good:
    fresh = new_password()
    await client.auth.ResetPassword(auth_pb2.ResetPasswordRequest(token=token, new_password=fresh))
    err = await error_of(
        lambda: client.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(token=token, new_password=new_password())
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # single use
    after = await client.login(email, fresh)
    assert after.challenge_id and not after.HasField("session")
    # Sessions from before the reset are revoked.
    err = await error_of(lambda: client.auth.Logout(auth_pb2.LogoutRequest(), metadata=md(session)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    A = audit_pb2.AuthAuditKind
    kinds = [e.kind for e in await audit_events(deployment, 5) if e.user_id == uid]
    assert A.AUTH_AUDIT_KIND_PASSWORD_RESET_REQUESTED in kinds
    assert kinds.count(A.AUTH_AUDIT_KIND_PASSWORD_RESET) == 2  # the invitation, the reset


async def test_unknown_and_known_users_get_identical_answers(
    client: AuthClient, mail: Mailbox
) -> None:
    _op, _uid, email, _password = await setup_user(client, mail)
    unknown = await error_of(lambda: client.login(f"nobody-{email}", "some-password-123"))
    known = await error_of(lambda: client.login(email, "some-password-123"))
    assert (unknown.code(), unknown.details()) == (known.code(), known.details())
    assert known.code() == grpc.StatusCode.UNAUTHENTICATED
    r1 = await client.auth.RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email=f"nobody-{email}")
    )
    r2 = await client.auth.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email=email))
    assert r1.SerializeToString() == r2.SerializeToString() == b""


async def test_change_password_needs_the_current_one(client: AuthClient, mail: Mailbox) -> None:
    _op, _uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    err = await error_of(
        lambda: client.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=password, new_password="password123456"
            ),
            metadata=md(session),
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # common password
    fresh = new_password()
    await client.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=password, new_password=fresh),
        metadata=md(session),
    )
    assert (await client.login(email, fresh)).HasField("session")


# -- accounts, roles and tenant isolation ----------------------------------------------


async def test_tenant_isolation_and_roles(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    op = await operator(client)
    a, b = await new_account(client, op), await new_account(client, op)
    _ua, email_a, pw_a = await new_user(client, mail, op, a.account_id)
    ub, email_b, pw_b = await new_user(client, mail, op, b.account_id)
    admin_a = await client.session(email_a, pw_a)
    m = md(admin_a)
    for call in (
        lambda: client.accounts.GetAccount(
            auth_pb2.GetAccountRequest(account_id=b.account_id), metadata=m
        ),
        lambda: client.accounts.ListUsers(
            auth_pb2.ListUsersRequest(account_id=b.account_id), metadata=m
        ),
        lambda: client.accounts.UpdateAccount(
            auth_pb2.UpdateAccountRequest(
                account=auth_pb2.Account(account_id=b.account_id, company_name="pwned"),
                update_mask=["company_name"],
            ),
            metadata=m,
        ),
        lambda: client.accounts.DisableUser(auth_pb2.DisableUserRequest(user_id=ub), metadata=m),
        lambda: client.accounts.UnlockUser(auth_pb2.UnlockUserRequest(user_id=ub), metadata=m),
        lambda: client.accounts.CreateUser(
            auth_pb2.CreateUserRequest(
                account_id=b.account_id, email="x@example.com", roles=[auth_pb2.ROLE_ANALYST]
            ),
            metadata=m,
        ),
    ):
        err = await error_of(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    listed = await client.accounts.ListAccounts(auth_pb2.ListAccountsRequest(), metadata=m)
    assert [x.account_id for x in listed.accounts] == [a.account_id]
    # Own account: the administrator edits allowed fields, not the subscription.
    updated = await client.accounts.UpdateAccount(
        auth_pb2.UpdateAccountRequest(
            account=auth_pb2.Account(account_id=a.account_id, company_name="New Name GmbH"),
            update_mask=["company_name"],
        ),
        metadata=m,
    )
    assert updated.account.company_name == "New Name GmbH" and updated.account.version == 2
    err = await error_of(
        lambda: client.accounts.DeleteAccount(
            auth_pb2.DeleteAccountRequest(account_id=a.account_id, confirm_account_name=a.name),
            metadata=m,
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # An analyst reads but never writes.
    _an, email_an, pw_an = await new_user(
        client, mail, admin_a, a.account_id, auth_pb2.ROLE_ANALYST
    )
    analyst = await client.session(email_an, pw_an)
    await client.accounts.GetAccount(
        auth_pb2.GetAccountRequest(account_id=a.account_id), metadata=md(analyst)
    )
    err = await error_of(
        lambda: client.accounts.CreateUser(
            auth_pb2.CreateUserRequest(
                account_id=a.account_id, email="y@example.com", roles=[auth_pb2.ROLE_ANALYST]
            ),
            metadata=md(analyst),
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Duplicate email, case-insensitively.
    err = await error_of(
        lambda: client.accounts.CreateUser(
            auth_pb2.CreateUserRequest(
                account_id=a.account_id, email=email_an.upper(), roles=[auth_pb2.ROLE_ANALYST]
            ),
            metadata=m,
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    # B's user's address, added in A: answered like any invitation (no probe of B's users);
    # B's user still signs in, and A lists its held user as one more invited user.
    held = await client.accounts.CreateUser(
        auth_pb2.CreateUserRequest(
            account_id=a.account_id, email=email_b.upper(), roles=[auth_pb2.ROLE_ANALYST]
        ),
        metadata=m,
    )
    assert held.user.account_id == a.account_id and not held.user.disabled
    await client.session(email_b, pw_b)  # B's user still signs in (raises otherwise)
    users_a = await client.accounts.ListUsers(
        auth_pb2.ListUsersRequest(account_id=a.account_id), metadata=m
    )
    assert held.user.user_id in [u.user_id for u in users_a.users]
    assert ub not in [u.user_id for u in users_a.users]

    # Delete needs the explicit confirmation; every change is a snapshot on the topic.
    err = await error_of(
        lambda: client.accounts.DeleteAccount(
            auth_pb2.DeleteAccountRequest(account_id=b.account_id, confirm_account_name="nope"),
            metadata=md(op),
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    await client.accounts.DeleteAccount(
        auth_pb2.DeleteAccountRequest(account_id=b.account_id, confirm_account_name=b.name),
        metadata=md(op),
    )
    async with TopicReader(deployment.infra.kafka_bootstrap, ACCOUNTS, deployment.prefix) as r:

        def snaps() -> list[accounts_pb2.AccountSnapshot]:
            return [unwrap(x.value, accounts_pb2.AccountSnapshot)[1] for x in r.records]

        await r.read_until(
            lambda _rs: any(s.account_id == b.account_id and s.deleted for s in snaps()), 20
        )
        mine = [s for s in snaps() if s.account_id == a.account_id]
        assert any(s.company_name == "New Name GmbH" and s.version == 2 for s in mine)
    err = await error_of(
        lambda: client.accounts.GetAccount(
            auth_pb2.GetAccountRequest(account_id=b.account_id), metadata=md(op)
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_second_replica_shares_keys_sessions_and_indexes(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    """A replica started on the same database (as after a restart) keeps the signing keys:
    tokens issued before verify, and the existing indexes do not stop the start-up."""
    _op, user_id, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    env = {**deployment.env, "TMSP_AUTH_GRPC_PORT": str(free_port())}
    replica = start_service(env)
    other = AuthClient(f"localhost:{env['TMSP_AUTH_GRPC_PORT']}", deployment.tls_dir)
    try:
        keys_a = await client.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest())
        keys_b = await other.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest())
        assert [k.kid for k in keys_a.keys] == [k.kid for k in keys_b.keys]
        await other.auth.SetTwoFactorPrompt(
            auth_pb2.SetTwoFactorPromptRequest(choice=auth_pb2.TWO_FACTOR_PROMPT_SKIP_FOR_NOW),
            metadata=md(session),
        )
        rotated = await other.auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=session.refresh_token)
        )
        assert rotated.session.user_id == user_id
    finally:
        await other.close()
        assert replica.terminate() == 0, replica.logs[-3000:]


async def test_cli_creates_a_customer_account_with_its_administrator(
    client: AuthClient, deployment: Deployment
) -> None:
    name, email, password = unique("Demo "), f"{unique('admin')}@demo.example", new_password()
    out = run_cli(
        deployment.env,
        [
            "create-account",
            "--name",
            name,
            "--company",
            "Demo Ltd",
            "--service",
            "threat-discovery",
            "--admin-email",
            email,
            "--password-stdin",
        ],
        password,
    )
    assert "account created" in out
    session = await client.session(email, password)
    listed = await client.accounts.ListAccounts(
        auth_pb2.ListAccountsRequest(), metadata=md(session)
    )
    assert [(a.name, a.managed_by_email, list(a.services)) for a in listed.accounts] == [
        (name, email, ["threat-discovery"])
    ]


# -- lost device: emergency code, then a new device or 2FA off -------------------------


async def test_lost_device_emergency_code_then_new_device_or_disable(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    """Seed 000 FAQ: not logged in and the device is lost -> request an emergency access
    code, log in with it, then register a new device or disable 2FA."""
    from tmsp_common.auth_keys import grpc_key_source
    from tmsp_common.tokens import JwtVerifier

    _op, uid, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    await enable_2fa(client, mail, session, email)

    challenge = await client.login(email, password)
    await client.auth.RequestEmergencyCode(
        auth_pb2.RequestEmergencyCodeRequest(challenge_id=challenge.challenge_id)
    )
    code = (await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE, email)).params["code"]
    rescued = (
        await client.auth.VerifySecondFactor(
            auth_pb2.VerifySecondFactorRequest(
                challenge_id=challenge.challenge_id, emergency_code=code
            )
        )
    ).session
    verifier = JwtVerifier(grpc_key_source(client.target, tls=True, tls_dir=client.tls_dir))
    assert (await verifier.verify(rescued.access_token)).factors == ("pwd", "email")
    await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE_USED, email)

    # Register a new device from the session the emergency code opened.
    await asyncio.sleep(2.1)  # the confirmation email's resend interval (2 s in these tests)
    prov = await provision(client, mail, rescued, email)
    await client.auth.ChangeDevice(
        auth_pb2.ChangeDeviceRequest(totp_code=code_for_step(prov.secret_base32, 1)),
        metadata=md(rescued),
    )
    await mail.next(K.NOTIFICATION_KIND_TWO_FACTOR_DEVICE_CHANGED, email)

    # Lost again: an emergency code disables 2FA (and the user is told it was used).
    await asyncio.sleep(2.1)
    challenge = await client.login(email, password)
    await client.auth.RequestEmergencyCode(
        auth_pb2.RequestEmergencyCodeRequest(challenge_id=challenge.challenge_id)
    )
    code = (await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE, email)).params["code"]
    wrong = "00000000" if code != "00000000" else "11111111"
    err = await error_of(
        lambda: client.auth.DisableTwoFactor(
            auth_pb2.DisableTwoFactorRequest(emergency_code=wrong), metadata=md(rescued)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.trailing_metadata() or ()).get("field") == "emergency_code"
    await client.auth.DisableTwoFactor(
        auth_pb2.DisableTwoFactorRequest(emergency_code=code), metadata=md(rescued)
    )
    await mail.next(K.NOTIFICATION_KIND_TWO_FACTOR_DISABLED, email)
    await mail.next(K.NOTIFICATION_KIND_EMERGENCY_CODE_USED, email)
    assert (await client.login(email, password)).HasField("session")
    err = await error_of(  # the code was spent by the disable
        lambda: client.auth.DisableTwoFactor(
            auth_pb2.DisableTwoFactorRequest(emergency_code=code), metadata=md(rescued)
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # 2FA is off now
    A = audit_pb2.AuthAuditKind
    kinds = [e.kind for e in await audit_events(deployment, 5) if e.user_id == uid]
    assert kinds.count(A.AUTH_AUDIT_KIND_EMERGENCY_CODE_USED) == 2
    assert A.AUTH_AUDIT_KIND_TWO_FACTOR_DEVICE_CHANGED in kinds
    assert A.AUTH_AUDIT_KIND_TWO_FACTOR_DISABLED in kinds


# -- sessions end: logout, disabled users ----------------------------------------------


async def test_logout_and_disabling_a_user_revoke_sessions(
    client: AuthClient, mail: Mailbox
) -> None:
    op, admin_id, email, password = await setup_user(client, mail)
    session = await client.session(email, password)
    await client.auth.Logout(auth_pb2.LogoutRequest(), metadata=md(session))
    err = await error_of(
        lambda: client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await error_of(
        lambda: client.auth.SetTwoFactorPrompt(
            auth_pb2.SetTwoFactorPromptRequest(choice=auth_pb2.TWO_FACTOR_PROMPT_SKIP_FOR_NOW),
            metadata=md(session),
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    # An administrator disables an analyst of the account; the analyst cannot do the same.
    admin = await client.session(email, password)
    analyst_id, analyst_email, analyst_pw = await new_user(
        client, mail, admin, session.account_id, auth_pb2.ROLE_ANALYST
    )
    analyst = await client.session(analyst_email, analyst_pw)
    for call in (
        lambda: client.accounts.DisableUser(
            auth_pb2.DisableUserRequest(user_id=admin_id), metadata=md(analyst)
        ),
        lambda: client.accounts.UnlockUser(
            auth_pb2.UnlockUserRequest(user_id=admin_id), metadata=md(analyst)
        ),
    ):
        err = await error_of(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    await client.accounts.DisableUser(
        auth_pb2.DisableUserRequest(user_id=analyst_id), metadata=md(admin)
    )
    err = await error_of(lambda: client.login(analyst_email, analyst_pw))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid email or password",
    )
    err = await error_of(
        lambda: client.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=analyst.refresh_token))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    users = await client.accounts.ListUsers(
        auth_pb2.ListUsersRequest(account_id=session.account_id), metadata=md(op)
    )
    assert {(u.email, u.disabled) for u in users.users} == {
        (email, False),
        (analyst_email, True),
    }


# -- account fields, validation --------------------------------------------------------


async def test_account_fields_snapshots_and_validation_that_changes_nothing(
    client: AuthClient, mail: Mailbox, deployment: Deployment
) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    op = await operator(client)
    start, end, before = (
        Timestamp(seconds=1_800_000_000),
        Timestamp(seconds=1_830_000_000),
        (Timestamp(seconds=1_700_000_000)),
    )
    created = (
        await client.accounts.CreateAccount(
            auth_pb2.CreateAccountRequest(
                account=auth_pb2.Account(
                    name=unique("Fields "),
                    company_name="Fields Ltd",
                    services=["threat-discovery", "incident-response"],
                    valid_from=start,
                    valid_until=end,
                    time_zone="Europe/Berlin",
                )
            ),
            metadata=md(op),
        )
    ).account
    assert list(created.services) == ["incident-response", "threat-discovery"]
    owner_id, owner_email, _pw = await new_user(client, mail, op, created.account_id)
    owned = (
        await client.accounts.UpdateAccount(
            auth_pb2.UpdateAccountRequest(
                account=auth_pb2.Account(
                    account_id=created.account_id, managed_by_user_id=owner_id
                ),
                update_mask=["managed_by_user_id"],
            ),
            metadata=md(op),
        )
    ).account
    assert (owned.managed_by_email, owned.version) == (owner_email, 2)

    # One bad field in the mask: INVALID_ARGUMENT naming it, and the good one is not applied.
    for account, mask, field in (
        (
            auth_pb2.Account(
                account_id=created.account_id, company_name="Changed", valid_until=before
            ),
            ["company_name", "valid_until"],
            "account.valid_until",
        ),
        (
            auth_pb2.Account(
                account_id=created.account_id, company_name="Changed", time_zone="Mars/Olympus"
            ),
            ["company_name", "time_zone"],
            "account.time_zone",
        ),
        (
            auth_pb2.Account(
                account_id=created.account_id, company_name="Changed", managed_by_user_id="nobody"
            ),
            ["company_name", "managed_by_user_id"],
            "account.managed_by_user_id",
        ),
    ):
        err = await error_of(
            lambda a=account, m=mask: client.accounts.UpdateAccount(
                auth_pb2.UpdateAccountRequest(account=a, update_mask=m), metadata=md(op)
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(err.trailing_metadata() or ()).get("field") == field
    now = (
        await client.accounts.GetAccount(
            auth_pb2.GetAccountRequest(account_id=created.account_id), metadata=md(op)
        )
    ).account
    assert now == owned  # nothing changed, not even the version

    async with TopicReader(deployment.infra.kafka_bootstrap, ACCOUNTS, deployment.prefix) as r:

        def snaps() -> list[accounts_pb2.AccountSnapshot]:
            return [
                s
                for s in (unwrap(x.value, accounts_pb2.AccountSnapshot)[1] for x in r.records)
                if s.account_id == created.account_id
            ]

        await r.read_until(lambda _rs: any(s.version == 2 for s in snaps()), 20)
        drain_until = time.monotonic() + 1.5  # and whatever else was published
        await r.read_until(lambda _rs: time.monotonic() > drain_until, 10)
        by_version = {s.version: s for s in snaps()}
    assert set(by_version) == {1, 2}  # one snapshot per change, none for the refused ones
    latest = by_version[2]
    assert (latest.managed_by_user_id, latest.managed_by_email) == (owner_id, owner_email)
    assert list(latest.services) == ["incident-response", "threat-discovery"]
    assert (latest.valid_from.seconds, latest.valid_until.seconds) == (start.seconds, end.seconds)
    assert latest.time_zone == "Europe/Berlin" and not latest.deleted


async def test_security_events_show_an_account_s_users_to_its_administrators_only(
    client: AuthClient, mail: Mailbox
) -> None:
    op = await operator(client)
    a, b = await new_account(client, op), await new_account(client, op)
    admin_id, admin_email, admin_pw = await new_user(client, mail, op, a.account_id)
    analyst_id, analyst_email, analyst_pw = await new_user(
        client, mail, op, a.account_id, auth_pb2.ROLE_ANALYST
    )
    _b_id, b_email, b_pw = await new_user(client, mail, op, b.account_id)
    admin = await client.session(admin_email, admin_pw)
    wrong = "not-the-password-" + analyst_pw  # never stored, never shown
    await error_of(lambda: client.login(analyst_email, wrong))
    analyst = await client.session(analyst_email, analyst_pw)
    admin_b = await client.session(b_email, b_pw)
    kinds = audit_pb2.AuthAuditKind

    async def listed(
        session: auth_pb2.Session, **fields: Any
    ) -> auth_pb2.ListSecurityEventsResponse:
        answer: auth_pb2.ListSecurityEventsResponse = await client.accounts.ListSecurityEvents(
            auth_pb2.ListSecurityEventsRequest(**fields), metadata=md(session)
        )
        return answer

    async def recorded() -> list[auth_pb2.SecurityEvent] | None:
        events = list((await listed(admin)).events)  # empty account_id: the caller's own
        seen = {(e.user_id, e.kind) for e in events}
        wanted = {
            (admin_id, kinds.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED),
            (analyst_id, kinds.AUTH_AUDIT_KIND_LOGIN_FAILED),
            (analyst_id, kinds.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED),
        }
        return events if wanted <= seen else None

    events = await wait_until(recorded, timeout=30)
    times = [e.occurred_at.ToDatetime() for e in events]
    assert times == sorted(times, reverse=True)  # newest first
    failed = next(e for e in events if e.kind == kinds.AUTH_AUDIT_KIND_LOGIN_FAILED)
    assert failed.email.lower() == analyst_email.lower() and failed.detail
    # the client named no address: the connection's peer is recorded
    assert failed.source_ip in {"127.0.0.1", "::1"}
    assert all(wrong not in e.detail and analyst_pw not in e.detail for e in events)
    assert {e.user_id for e in events} <= {admin_id, analyst_id, ""}

    # filters and pages
    only = await listed(
        admin,
        account_id=a.account_id,
        user_id=analyst_id,
        kinds=[kinds.AUTH_AUDIT_KIND_LOGIN_FAILED],
    )
    assert [(e.user_id, e.kind) for e in only.events] == [
        (analyst_id, kinds.AUTH_AUDIT_KIND_LOGIN_FAILED)
    ]
    first = await listed(admin, page_size=1)
    second = await listed(admin, page_size=1, page_token=first.next_page_token)
    assert first.next_page_token
    assert [e.event_id for e in [*first.events, *second.events]] == [e.event_id for e in events[:2]]
    bad = await error_of(lambda: listed(admin, page_token="not-a-token"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT

    # analysts may not; another tenant's administrator sees nothing of it; operators may
    denied = await error_of(lambda: listed(analyst))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    hidden = await error_of(lambda: listed(admin_b, account_id=a.account_id))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    own_b = await listed(admin_b)
    assert not {e.event_id for e in own_b.events} & {e.event_id for e in events}
    by_operator = await listed(op, account_id=a.account_id)
    assert {e.event_id for e in events} <= {e.event_id for e in by_operator.events}

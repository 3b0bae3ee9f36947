"""The one place that builds adapters and wires them to the use cases."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from tmsp_auth.adapters.events import EventPublisher
from tmsp_auth.adapters.repositories import (
    AccountRepository,
    ChallengeRepository,
    CodeRepository,
    SecurityEventRepository,
    SessionRepository,
    SigningKeyRepository,
    TokenRepository,
    UserRepository,
    create_indexes,
)
from tmsp_auth.adapters.signing_keys import SigningKeys
from tmsp_auth.config import AuthSettings
from tmsp_auth.domain.codes import CodeHasher, CodeRules
from tmsp_auth.domain.crypto import Keyring
from tmsp_auth.domain.lockout import LockoutPolicy
from tmsp_auth.domain.passwords import Argon2Params, Hasher
from tmsp_auth.service_layer.accounts import AccountUseCases
from tmsp_auth.service_layer.auth import AuthUseCases
from tmsp_auth.service_layer.context import AuthConfig, AuthContext
from tmsp_auth.service_layer.security_events import SecurityEvents
from tmsp_common.authn import Principal
from tmsp_common.clock import Clock, SystemClock
from tmsp_common.errors import Unauthenticated
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.logging import get_logger
from tmsp_common.mongo import Document
from tmsp_common.tokens import JwtVerifier

log = get_logger(__name__)


def keyring_from(settings: AuthSettings) -> Keyring:
    """The configured keys, or (local stack only) a key file created once beside tls_dir."""
    spec = settings.encryption_keys.get_secret_value().strip()
    if spec:
        return Keyring.parse(spec)
    path = Path(settings.tls_dir).parent / "auth" / "encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Keyring.generate_spec("local1"))
        log.warning("generated a local encryption key; set TMSP_AUTH_ENCRYPTION_KEYS in production")
    return Keyring.parse(path.read_text().strip())


def auth_config(settings: AuthSettings) -> AuthConfig:
    return AuthConfig(
        lockout=LockoutPolicy(
            threshold=settings.lockout_threshold,
            base_period=timedelta(minutes=settings.lockout_minutes),
            max_period=timedelta(hours=settings.lockout_max_hours),
            attempt_lease=timedelta(seconds=settings.lockout_lease_seconds),
        ),
        code_rules=CodeRules(
            ttl=timedelta(minutes=settings.code_minutes),
            resend_interval=timedelta(seconds=settings.code_resend_seconds),
        ),
        refresh_ttl=timedelta(days=settings.refresh_token_days),
        challenge_ttl=timedelta(minutes=settings.challenge_minutes),
        reset_ttl=timedelta(minutes=settings.reset_token_minutes),
        invite_ttl=timedelta(hours=settings.invite_token_hours),
        emergency_codes_enabled=settings.emergency_codes_enabled,
        totp_issuer=settings.totp_issuer,
        reset_url_base=settings.reset_url_base,
        recovery_code_count=settings.recovery_code_count,
    )


@dataclass
class App:
    ctx: AuthContext
    auth: AuthUseCases
    accounts: AccountUseCases
    security_events: SecurityEvents
    verifier: SessionVerifier


class SessionVerifier:
    """Verifies access tokens with auth's own keys and rejects tokens of revoked sessions."""

    def __init__(self, keys: SigningKeys, sessions: SessionRepository, clock: Clock) -> None:
        self._jwt = JwtVerifier(keys.key_map, clock=clock, min_refresh_interval_s=1.0)
        self._sessions = sessions
        self._clock = clock

    async def verify(self, token: str) -> Principal:
        principal = await self._jwt.verify(token)
        if not await self._sessions.is_active(principal.session_id, self._clock.now()):
            raise Unauthenticated("session revoked or expired")
        return principal


async def build(
    settings: AuthSettings,
    db: AsyncDatabase[Document],
    producer: EventProducer,
    *,
    clock: Clock | None = None,
) -> App:
    clock = clock or SystemClock()
    await create_indexes(db)
    keyring = keyring_from(settings)
    code_hasher = CodeHasher(keyring.derive("code-pepper"))
    hasher = Hasher(
        Argon2Params(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
    )
    keys = SigningKeys(
        SigningKeyRepository(db),
        keyring,
        clock,
        rotation=timedelta(days=settings.signing_key_rotation_days),
        access_ttl=timedelta(minutes=settings.access_token_minutes),
    )
    await keys.load()
    sessions = SessionRepository(db, code_hasher)
    ctx = AuthContext(
        users=UserRepository(db),
        accounts=AccountRepository(db),
        codes=CodeRepository(db, code_hasher),
        tokens=TokenRepository(db, code_hasher),
        challenges=ChallengeRepository(db, code_hasher),
        sessions=sessions,
        keys=keys,
        events=EventPublisher(producer),
        hasher=hasher,
        code_hasher=code_hasher,
        keyring=keyring,
        clock=clock,
        config=auth_config(settings),
    )
    auth = AuthUseCases(ctx)
    return App(
        ctx=ctx,
        auth=auth,
        accounts=AccountUseCases(ctx, auth),
        security_events=SecurityEvents(
            SecurityEventRepository(db),
            ctx.accounts,
            clock,
            retention=timedelta(days=settings.security_event_retention_days),
        ),
        verifier=SessionVerifier(keys, sessions, clock),
    )

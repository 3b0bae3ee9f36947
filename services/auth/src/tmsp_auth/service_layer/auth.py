"""Use cases of login, the second factor, sessions, passwords and the user's 2FA device."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tmsp_auth.adapters.events import AuditKind, NotificationKind
from tmsp_auth.adapters.metrics import CODES_SENT, LOCKOUTS, LOGIN_ATTEMPTS
from tmsp_auth.adapters.repositories import (
    CodeResult,
    RefreshOutcome,
    Reservation,
    aware,
    lock_state,
)
from tmsp_auth.adapters.signing_keys import PublicKey
from tmsp_auth.domain import codes as code_gen
from tmsp_auth.domain import totp
from tmsp_auth.domain.codes import CodePurpose
from tmsp_auth.domain.lockout import HOUR, HOURLY_HARD_CAP
from tmsp_auth.domain.passwords import MAX_LENGTH, check_password_policy
from tmsp_auth.service_layer.context import AuthContext, normalize_email
from tmsp_common.authn import Principal, Role
from tmsp_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from tmsp_common.logging import get_logger
from tmsp_common.mongo import Document

log = get_logger(__name__)

INVALID_LOGIN = "invalid email or password"
PROMPT_CHOICES = ("", "continue_to_settings", "do_not_show_again", "skip_for_now")


@dataclass(frozen=True)
class SessionTokens:
    access_token: str
    refresh_token: str
    access_expires_at: datetime
    session_id: str
    user_id: str
    account_id: str


@dataclass(frozen=True)
class LoginResult:
    session: SessionTokens | None = None
    challenge_id: str = ""
    challenge_expires_at: datetime | None = None
    offer_two_factor_setup: bool = False


def _roles(user: Document) -> frozenset[Role]:
    return frozenset(Role(r) for r in user.get("roles", []))


def _name(user: Document) -> str:
    return str(user.get("display_name") or user.get("email", ""))


_SETTLING: set[asyncio.Task[None]] = set()
"""Settlements under way (a reference each, so a cancelled caller's task is not collected)."""


class Attempt:
    """An attempt reserved against the lockout counters (:meth:`AuthUseCases._attempt`).

    Settled exactly once: :meth:`failed`, :meth:`release` or :meth:`succeeded`. A
    settlement runs to its end even if the call is cancelled meanwhile (``asyncio.shield``).
    """

    def __init__(
        self, uc: AuthUseCases, user: Document, reservation: Reservation, kind: int, source_ip: str
    ) -> None:
        self._uc, self._user, self._kind, self._source_ip = uc, user, kind, source_ip
        self.reservation = reservation
        self.settled = False

    async def failed(self, detail: str) -> None:
        """A wrong password or code: the slot stays spent, the last one locks the user."""
        await self._settle(
            lambda: self._uc._failed(
                self._user,
                self.reservation,
                kind=self._kind,
                detail=detail,
                source_ip=self._source_ip,
            )
        )

    async def release(self) -> None:
        """The check passed but completed no login: the slot is given back."""
        await self._settle(lambda: self._uc.ctx.users.release_attempt(self.reservation))

    async def succeeded(self) -> None:
        """A completed login: failures and consecutive lockouts start over."""
        uid = str(self._user["_id"])
        await self._settle(lambda: self._uc.ctx.users.clear_failures(uid, self.reservation))

    async def _settle(self, settlement: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.settled:
            raise RuntimeError("the attempt is already settled")
        self.settled = True
        task = asyncio.ensure_future(settlement())
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
        await asyncio.shield(task)


class AuthUseCases:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.ctx.clock.now()

    async def _user(self, user_id: str) -> Document:
        user = await self.ctx.users.get(user_id)
        if user is None or user.get("disabled"):
            raise Unauthenticated("authentication required")
        return user

    async def _failed(
        self,
        user: Document,
        reservation: Reservation,
        *,
        kind: int,
        detail: str,
        source_ip: str = "",
    ) -> None:
        """Record a failed check; lock the user when this was the last allowed attempt.

        The lock is stored before any event is published, so a bus outage (Unavailable
        raised from here) loses events, never the lock.
        """
        ctx, now = self.ctx, self._now()
        uid, acct, email = str(user["_id"]), str(user["account_id"]), str(user["email"])
        policy = ctx.config.lockout
        cap_hit = reservation.window_failures >= HOURLY_HARD_CAP
        locks = reservation.attempt >= policy.effective_threshold or cap_hit
        until = now + policy.lock_period(reservation.lockouts)
        if cap_hit:
            until = max(until, now + HOUR)
        if locks:
            await ctx.users.lock(uid, until, reservation.epoch, reservation.lockouts)
            LOCKOUTS.inc()
        await ctx.events.audit(
            kind, user_id=uid, account_id=acct, email=email, source_ip=source_ip, detail=detail
        )
        if not locks:
            return
        seconds = int((until - now).total_seconds())
        await ctx.events.all(
            ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_LOCKED_OUT,
                user_id=uid,
                account_id=acct,
                email=email,
                source_ip=source_ip,
                detail=f"locked for {seconds}s",
            ),
            ctx.events.notify(
                NotificationKind.NOTIFICATION_KIND_ACCOUNT_LOCKED,
                account_id=acct,
                recipients=[email],
                params={
                    "user_name": _name(user),
                    "locked_until": until.isoformat(),
                    "locked_minutes": str(max(1, seconds // 60)),
                },
                notification_id=f"locked:{uid}:{int(until.timestamp())}",
            ),
        )

    @asynccontextmanager
    async def _attempt(
        self, user: Document, *, kind: int, source_ip: str = "", login_password: str = ""
    ) -> AsyncIterator[Attempt]:
        """Reserve one attempt (refused as :meth:`_reserve` says) and settle it on every exit.

        The body settles it; leaving without doing so (an exception, a cancelled call)
        counts as a failure, recorded even under cancellation. Slots of a process that died
        meanwhile are recovered after a lease by ``UserRepository.reserve_attempt``.
        """
        reservation = await self._reserve(user, login_password=login_password, source_ip=source_ip)
        attempt = Attempt(self, user, reservation, kind, source_ip)
        try:
            yield attempt
        finally:
            if not attempt.settled:
                try:
                    await attempt.failed("attempt interrupted")
                except Exception as exc:  # the lock is stored first; only events are lost
                    log.warning(
                        "interrupted attempt not fully recorded",
                        user_id=str(user["_id"]),
                        error=type(exc).__name__,
                    )

    async def _reserve(
        self, user: Document, *, login_password: str = "", source_ip: str = ""
    ) -> Reservation:
        """Reserve one attempt. Refused: at login (``login_password``) the answer of a wrong
        password after the same hash cost; elsewhere RateLimited with a retry hint."""
        ctx, now, uid = self.ctx, self._now(), str(user["_id"])
        reservation = await ctx.users.reserve_attempt(uid, ctx.config.lockout, now)
        if reservation is not None:
            return reservation
        if login_password:
            await ctx.burn_hash(login_password)
            await ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_LOGIN_FAILED,
                user_id=uid,
                account_id=str(user["account_id"]),
                email=str(user["email_norm"]),
                source_ip=source_ip,
                detail="locked",
            )
            LOGIN_ATTEMPTS.labels("refused_locked").inc()
            raise Unauthenticated(INVALID_LOGIN)
        window = await ctx.users.failures_last_hour(uid, now)
        wait = lock_state(await ctx.users.lockout(uid), window, now).retry_after(now)
        raise RateLimited(
            "too many failed attempts; try again later",
            retry_after_seconds=max(1.0, wait.total_seconds()),
        )

    async def _reauthenticate(self, user: Document, password: str, field: str) -> None:
        """Check the current password of a signed-in user; failures count toward lockout."""
        if not password:
            raise InvalidArgument(field, "is required")
        async with self._attempt(user, kind=AuditKind.AUTH_AUDIT_KIND_LOGIN_FAILED) as attempt:
            stored = user.get("password_hash")
            if not stored or not await self.ctx.verify_password(str(stored), password):
                await attempt.failed("wrong password (re-authentication)")
                raise Unauthenticated("the password is wrong")
            await attempt.release()

    async def _check_totp(self, user: Document, code: str, *, pending: bool = False) -> bool:
        """A code of the user's (pending) device, accepted at most once per time step."""
        doc = user.get("totp_pending" if pending else "totp")
        if not doc:
            return False
        uid = str(user["_id"])
        secret = self.ctx.open_totp(uid, doc)
        step = totp.matching_step(secret, code, self._now())
        if step is None:
            return False
        return await self.ctx.users.claim_totp_step(uid, step, self._now())

    async def _open_session(self, user: Document, factors: tuple[str, ...]) -> SessionTokens:
        ctx, now = self.ctx, self._now()
        sid = uuid.uuid4().hex
        refresh = f"{sid}.{code_gen.token()}"
        await ctx.sessions.create(
            {
                "_id": sid,
                "user_id": str(user["_id"]),
                "account_id": str(user["account_id"]),
                "factors": list(factors),
                "created_at": now,
                "expires_at": now + ctx.config.refresh_ttl,
            },
            refresh,
        )
        return await self._tokens(user, sid, refresh, factors)

    async def _tokens(
        self, user: Document, sid: str, refresh: str, factors: tuple[str, ...]
    ) -> SessionTokens:
        signer = await self.ctx.keys.signer()
        principal = Principal(
            user_id=str(user["_id"]),
            account_id=str(user["account_id"]),
            roles=_roles(user),
            session_id=sid,
            factors=factors,
        )
        return SessionTokens(
            access_token=signer.issue(principal),
            refresh_token=refresh,
            access_expires_at=self._now() + signer.ttl,
            session_id=sid,
            user_id=principal.user_id,
            account_id=principal.account_id,
        )

    # -- login -------------------------------------------------------------------------

    async def login(self, email: str, password: str, source_ip: str = "") -> LoginResult:
        """Email and password; the same answer for unknown, wrong, disabled and locked."""
        ctx, now = self.ctx, self._now()
        if not email.strip():
            raise InvalidArgument("email", "is required")
        if not password:
            raise InvalidArgument("password", "is required")
        if len(password) > 4 * MAX_LENGTH:
            raise InvalidArgument("password", "is too long")
        email_norm = normalize_email(email)
        user = await ctx.users.by_email(email_norm)
        if user is None or user.get("disabled") or not user.get("password_hash"):
            await ctx.burn_hash(password)
            await ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_LOGIN_FAILED,
                user_id=str(user["_id"]) if user else "",
                account_id=str(user["account_id"]) if user else "",
                email=email_norm,
                source_ip=source_ip,
                detail="unknown or disabled user",
            )
            LOGIN_ATTEMPTS.labels("unknown_user").inc()
            raise Unauthenticated(INVALID_LOGIN)
        uid = str(user["_id"])
        async with self._attempt(
            user,
            kind=AuditKind.AUTH_AUDIT_KIND_LOGIN_FAILED,
            source_ip=source_ip,
            login_password=password,
        ) as attempt:
            stored = str(user["password_hash"])
            if not await ctx.verify_password(stored, password):
                await attempt.failed("wrong password")
                LOGIN_ATTEMPTS.labels("failed").inc()
                raise Unauthenticated(INVALID_LOGIN)
            if ctx.hasher.needs_rehash(stored):
                await ctx.users.set_fields(
                    uid, {"password_hash": await ctx.hash_password(password)}
                )
            if user.get("totp"):
                # The password attempt is given back; the second factor reserves its own.
                await attempt.release()
                challenge = code_gen.token()
                expires = now + ctx.config.challenge_ttl
                await ctx.challenges.create(challenge, uid, expires)
                LOGIN_ATTEMPTS.labels("challenge").inc()
                return LoginResult(challenge_id=challenge, challenge_expires_at=expires)
            _, session = await asyncio.gather(
                attempt.succeeded(), self._open_session(user, ("pwd",))
            )
        await ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED,
            user_id=uid,
            account_id=str(user["account_id"]),
            email=email_norm,
            source_ip=source_ip,
            session_id=session.session_id,
            detail="password",
        )
        LOGIN_ATTEMPTS.labels("password_ok").inc()
        offer = user.get("two_factor_prompt", "") != "do_not_show_again"
        return LoginResult(session=session, offer_two_factor_setup=offer)

    async def verify_second_factor(
        self,
        challenge_id: str,
        *,
        totp_code: str = "",
        emergency_code: str = "",
        recovery_code: str = "",
        source_ip: str = "",
    ) -> tuple[SessionTokens, int]:
        """Complete a challenge with one code; returns the session and recovery codes left."""
        ctx, now = self.ctx, self._now()
        given = [c for c in (totp_code, emergency_code, recovery_code) if c.strip()]
        if len(given) != 1:
            raise InvalidArgument(
                "totp_code", "give exactly one of totp_code, emergency_code, recovery_code"
            )
        if not challenge_id:
            raise InvalidArgument("challenge_id", "is required")
        if emergency_code and not ctx.config.emergency_codes_enabled:
            raise FailedPrecondition("emergency codes are disabled")
        uid = await ctx.challenges.take_attempt(challenge_id, now)
        if uid is None:
            raise Unauthenticated("the login challenge is invalid or expired; log in again")
        user = await self._user(uid)
        if not user.get("totp"):
            raise Unauthenticated("the login challenge is invalid or expired; log in again")
        acct, email = str(user["account_id"]), str(user["email"])
        async with self._attempt(
            user, kind=AuditKind.AUTH_AUDIT_KIND_SECOND_FACTOR_FAILED, source_ip=source_ip
        ) as attempt:
            expired = False
            if totp_code:
                ok, factor = await self._check_totp(user, totp_code), "otp"
                expired = not ok and totp.is_stale(ctx.open_totp(uid, user["totp"]), totp_code, now)
            elif emergency_code:
                result = await ctx.codes.consume(uid, CodePurpose.EMERGENCY, emergency_code, now)
                ok, factor = result is CodeResult.OK, "email"
                expired = result is CodeResult.EXPIRED
            else:
                digest = ctx.code_hasher.digest(recovery_code)
                ok = await ctx.users.consume_recovery_code(user, digest, now)
                factor = "recovery"
            if not ok:
                await attempt.failed(f"wrong {factor} code")
                LOGIN_ATTEMPTS.labels("second_factor_failed").inc()
                raise Unauthenticated("the code has expired" if expired else "the code is invalid")
            if not await ctx.challenges.complete(challenge_id):
                await attempt.release()  # the code was right; another request won the race
                raise Unauthenticated("the login challenge is invalid or expired; log in again")
            _, session = await asyncio.gather(
                attempt.succeeded(), self._open_session(user, ("pwd", factor))
            )
        LOGIN_ATTEMPTS.labels("second_factor_ok").inc()
        left = 0
        publications: list[Awaitable[None]] = [
            ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED,
                user_id=uid,
                account_id=acct,
                email=email,
                source_ip=source_ip,
                session_id=session.session_id,
                detail=f"password and {factor}",
            )
        ]
        if factor != "otp":
            if factor == "recovery":
                left = await ctx.users.recovery_codes_left(user)
            publications += self._code_used(user, factor, source_ip=source_ip, left=left)
        await ctx.events.all(*publications)
        return session, left

    def _code_used(
        self, user: Document, factor: str, *, source_ip: str = "", left: int = 0
    ) -> list[Awaitable[None]]:
        """Audit event and email to the user for a spent emergency ("email") or recovery code."""
        ctx, uid, acct, email = (
            self.ctx,
            str(user["_id"]),
            str(user["account_id"]),
            str(user["email"]),
        )
        audit, note = {
            "email": (
                AuditKind.AUTH_AUDIT_KIND_EMERGENCY_CODE_USED,
                NotificationKind.NOTIFICATION_KIND_EMERGENCY_CODE_USED,
            ),
            "recovery": (
                AuditKind.AUTH_AUDIT_KIND_RECOVERY_CODE_USED,
                NotificationKind.NOTIFICATION_KIND_RECOVERY_CODE_USED,
            ),
        }[factor]
        return [
            ctx.events.audit(audit, user_id=uid, account_id=acct, email=email, source_ip=source_ip),
            ctx.events.notify(
                note,
                account_id=acct,
                recipients=[email],
                params={
                    "user_name": _name(user),
                    "used_at": self._now().isoformat(),
                    "source_ip": source_ip,
                    "recovery_codes_left": str(left),
                },
            ),
        ]

    # -- sessions ----------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> SessionTokens:
        """Rotate the refresh token; a spent one revokes the whole session."""
        ctx, now = self.ctx, self._now()
        sid, dot, _ = refresh_token.partition(".")
        if not dot or not sid:
            raise Unauthenticated("invalid refresh token")
        new_token = f"{sid}.{code_gen.token()}"
        outcome, doc = await ctx.sessions.rotate(sid, refresh_token, new_token, now)
        if outcome is RefreshOutcome.REUSED and doc is not None:
            await ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_REFRESH_TOKEN_REUSED,
                user_id=str(doc["user_id"]),
                account_id=str(doc["account_id"]),
                session_id=sid,
                detail="spent refresh token presented; session revoked",
            )
            raise Unauthenticated("refresh token already used; the session is revoked")
        if outcome is not RefreshOutcome.ROTATED or doc is None:
            raise Unauthenticated("invalid refresh token")
        user = await ctx.users.get(str(doc["user_id"]))
        if user is None or user.get("disabled"):
            await ctx.sessions.revoke(sid, "user disabled")
            raise Unauthenticated("invalid refresh token")
        return await self._tokens(user, sid, new_token, tuple(doc.get("factors", ["pwd"])))

    async def logout(self, principal: Principal) -> None:
        await self.ctx.sessions.revoke(principal.session_id, "logout")
        await self.ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_SESSION_REVOKED,
            user_id=principal.user_id,
            account_id=principal.account_id,
            session_id=principal.session_id,
            detail="logout",
        )

    async def signing_keys(self) -> list[PublicKey]:
        return await self.ctx.keys.public_keys()

    async def set_two_factor_prompt(self, principal: Principal, choice: str) -> None:
        if choice not in PROMPT_CHOICES or not choice:
            raise InvalidArgument("choice", "is required")
        await self._user(principal.user_id)
        await self.ctx.users.set_fields(principal.user_id, {"two_factor_prompt": choice})

    # -- passwords ---------------------------------------------------------------------

    async def change_password(
        self, principal: Principal, current: str, new: str, totp_code: str = ""
    ) -> None:
        ctx = self.ctx
        user = await self._user(principal.user_id)
        check_password_policy(new, field="new_password", email=str(user["email"]))
        if user.get("totp") and not totp_code:
            raise InvalidArgument("totp_code", "is required while 2FA is enabled")
        await self._reauthenticate(user, current, "current_password")
        if user.get("totp"):
            async with self._attempt(
                user, kind=AuditKind.AUTH_AUDIT_KIND_SECOND_FACTOR_FAILED
            ) as attempt:
                if not await self._check_totp(user, totp_code):
                    await attempt.failed("wrong otp code (password change)")
                    raise Unauthenticated("the code is invalid")
                await attempt.release()
        await ctx.users.set_fields(
            principal.user_id, {"password_hash": await ctx.hash_password(new)}
        )
        await ctx.sessions.revoke_user(
            principal.user_id, "password changed", keep=principal.session_id
        )
        await ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_PASSWORD_CHANGED,
            user_id=principal.user_id,
            account_id=principal.account_id,
            email=str(user["email"]),
            session_id=principal.session_id,
        )

    async def issue_password_link(
        self, user: Document, *, invite: bool, held: bool = False
    ) -> None:
        """Email a single-use link that sets the password (reset or invitation).

        ``held``: the invitation of a held user (``UserRepository.held_fields``): no link (it
        could never sign in), the mail says why; to its account it is like any invitation
        (the same notification kind and subject, audit record and metric)."""
        ctx, now = self.ctx, self._now()
        params = {"user_name": _name(user), "invite": "in_use"}
        if not held:
            token = code_gen.token()
            ttl = ctx.config.invite_ttl if invite else ctx.config.reset_ttl
            await ctx.tokens.issue(str(user["_id"]), token, now + ttl)
            params.update(
                reset_url=ctx.config.reset_url_base + token,
                expires_minutes=str(int(ttl.total_seconds() // 60)),
                invite="true" if invite else "false",
            )
        CODES_SENT.labels("invitation" if invite else "password_reset").inc()
        await ctx.events.all(
            ctx.events.notify(
                NotificationKind.NOTIFICATION_KIND_PASSWORD_RESET,
                account_id=str(user["account_id"]),
                recipients=[str(user["email"])],
                params=params,
            ),
            ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_PASSWORD_RESET_REQUESTED,
                user_id=str(user["_id"]),
                account_id=str(user["account_id"]),
                email=str(user["email"]),
                detail="invitation" if invite else "reset link sent",
            ),
        )

    async def request_password_reset(self, email: str) -> None:
        """Same answer (and a published event either way) whether or not the address exists."""
        ctx, now = self.ctx, self._now()
        email_norm = normalize_email(email)
        # At most one link per address per minute (a claim), so the endpoint cannot be used
        # to flood a mailbox; a throttled request gets the same answer.
        bucket = int(now.timestamp() // 60)
        fresh = await ctx.users.markers.claim(
            f"reset-request:{ctx.code_hasher.digest(email_norm)}:{bucket}",
            kind="reset-request",
            at=now,
        )
        user = await ctx.users.by_email(email_norm)
        if fresh and user is not None and not user.get("disabled"):
            await self.issue_password_link(user, invite=False)
            return
        await ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_PASSWORD_RESET_REQUESTED,
            email=email_norm,
            detail="nothing sent: " + ("no such active user" if fresh else "throttled"),
        )

    async def reset_password(self, token: str, new_password: str) -> None:
        """Spend the token and set the password. No session: login (with 2FA) follows."""
        ctx, now = self.ctx, self._now()
        if not token:
            raise InvalidArgument("token", "is required")
        uid = await ctx.tokens.peek(token, now)
        user = None if uid is None else await ctx.users.get(uid)
        if uid is None or user is None or user.get("disabled"):
            raise InvalidArgument("token", "is invalid, expired or already used")
        # Invited users set their first password here: the same rules as everywhere else,
        # checked before the token is spent so a rejected password keeps the link usable.
        check_password_policy(new_password, field="new_password", email=str(user["email"]))
        if not await ctx.tokens.spend(token, now):
            raise InvalidArgument("token", "is invalid, expired or already used")
        await ctx.users.set_fields(uid, {"password_hash": await ctx.hash_password(new_password)})
        await ctx.tokens.discard_for_user(uid)
        await ctx.sessions.revoke_user(uid, "password reset")
        await ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_PASSWORD_RESET,
            user_id=uid,
            account_id=str(user["account_id"]),
            email=str(user["email"]),
        )

    # -- two-factor device -------------------------------------------------------------

    async def send_confirmation_email(self, principal: Principal) -> datetime:
        ctx, now = self.ctx, self._now()
        user = await self._user(principal.user_id)
        code = code_gen.numeric_code(ctx.config.code_rules.digits)
        expires = await ctx.codes.issue(
            principal.user_id, CodePurpose.TWO_FACTOR_SETUP, code, ctx.config.code_rules, now
        )
        CODES_SENT.labels("confirmation").inc()
        await ctx.events.notify(
            NotificationKind.NOTIFICATION_KIND_CONFIRMATION_CODE,
            account_id=principal.account_id,
            recipients=[str(user["email"])],
            params={
                "user_name": _name(user),
                "code": code,
                "expires_minutes": str(int(ctx.config.code_rules.ttl.total_seconds() // 60)),
            },
        )
        return expires

    async def confirm_setup_code(self, principal: Principal, code: str) -> totp.Provisioning:
        ctx, now = self.ctx, self._now()
        if not code.strip():
            raise InvalidArgument("confirmation_code", "is required")
        user = await self._user(principal.user_id)
        result = await ctx.codes.consume(principal.user_id, CodePurpose.TWO_FACTOR_SETUP, code, now)
        if result is CodeResult.EXPIRED:
            raise InvalidArgument("confirmation_code", "has expired; request a new one")
        if result is not CodeResult.OK:
            raise InvalidArgument("confirmation_code", "is invalid")
        secret = totp.new_secret()
        pending = {**ctx.seal_totp(principal.user_id, secret), "created_at": now}
        await ctx.users.set_fields(principal.user_id, {"totp_pending": pending})
        return totp.provisioning(
            secret, issuer=ctx.config.totp_issuer, account_label=str(user["email"])
        )

    async def _pending_ok(self, user: Document, code: str) -> Document:
        pending = user.get("totp_pending")
        if not pending:
            raise FailedPrecondition("confirm the emailed confirmation code first")
        if aware(pending.get("created_at")) + self.ctx.config.pending_totp_ttl <= self._now():
            raise FailedPrecondition("the setup has expired; start again")
        if not code.strip():
            raise InvalidArgument("totp_code", "is required")
        if not await self._check_totp(user, code, pending=True):
            raise InvalidArgument("totp_code", "is invalid or already used")
        return dict(pending)

    async def _new_recovery_codes(self) -> tuple[list[str], list[str]]:
        plain = code_gen.recovery_codes(self.ctx.config.recovery_code_count)
        return plain, [self.ctx.code_hasher.digest(c) for c in plain]

    async def enable_two_factor(self, principal: Principal, code: str) -> list[str]:
        ctx = self.ctx
        user = await self._user(principal.user_id)
        if user.get("totp"):
            raise FailedPrecondition("two-factor authentication is already enabled")
        pending = await self._pending_ok(user, code)
        plain, digests = await self._new_recovery_codes()
        enabled = {k: pending[k] for k in ("kid", "nonce", "ciphertext")}
        swapped = await ctx.users.compare_and_set(
            principal.user_id,
            {"totp": None, "totp_pending.nonce": pending["nonce"]},
            {
                "totp": {**enabled, "enabled_at": self._now()},
                "totp_pending": None,
                "recovery_codes": digests,
                "recovery_set": uuid.uuid4().hex,
            },
        )
        if not swapped:
            raise FailedPrecondition("two-factor setup changed meanwhile; start again")
        await self._device_event(user, enabled=True)
        return plain

    async def change_device(self, principal: Principal, code: str) -> None:
        ctx = self.ctx
        user = await self._user(principal.user_id)
        current = user.get("totp")
        if not current:
            raise FailedPrecondition("two-factor authentication is not enabled")
        pending = await self._pending_ok(user, code)
        enabled = {k: pending[k] for k in ("kid", "nonce", "ciphertext")}
        swapped = await ctx.users.compare_and_set(
            principal.user_id,
            {"totp.nonce": current["nonce"], "totp_pending.nonce": pending["nonce"]},
            {"totp": {**enabled, "enabled_at": self._now()}, "totp_pending": None},
        )
        if not swapped:
            raise FailedPrecondition("two-factor setup changed meanwhile; start again")
        await ctx.events.all(
            ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_TWO_FACTOR_DEVICE_CHANGED,
                user_id=principal.user_id,
                account_id=principal.account_id,
                email=str(user["email"]),
                session_id=principal.session_id,
            ),
            ctx.events.notify(
                NotificationKind.NOTIFICATION_KIND_TWO_FACTOR_DEVICE_CHANGED,
                account_id=principal.account_id,
                recipients=[str(user["email"])],
                params={"user_name": _name(user), "changed_at": self._now().isoformat()},
            ),
        )

    async def _device_event(self, user: Document, *, enabled: bool, detail: str = "") -> None:
        ctx = self.ctx
        audit = (
            AuditKind.AUTH_AUDIT_KIND_TWO_FACTOR_ENABLED
            if enabled
            else AuditKind.AUTH_AUDIT_KIND_TWO_FACTOR_DISABLED
        )
        note = (
            NotificationKind.NOTIFICATION_KIND_TWO_FACTOR_ENABLED
            if enabled
            else NotificationKind.NOTIFICATION_KIND_TWO_FACTOR_DISABLED
        )
        await ctx.events.all(
            ctx.events.audit(
                audit,
                user_id=str(user["_id"]),
                account_id=str(user["account_id"]),
                email=str(user["email"]),
                detail=detail,
            ),
            ctx.events.notify(
                note,
                account_id=str(user["account_id"]),
                recipients=[str(user["email"])],
                params={"user_name": _name(user), "changed_at": self._now().isoformat()},
            ),
        )

    async def request_emergency_code(self, challenge_id: str) -> datetime:
        """Email an emergency code for a pending login (the password step is passed)."""
        ctx, now = self.ctx, self._now()
        if not ctx.config.emergency_codes_enabled:
            raise FailedPrecondition("emergency codes are disabled")
        if not challenge_id:
            raise InvalidArgument("challenge_id", "is required")
        uid = await ctx.challenges.peek(challenge_id, now)
        if uid is None:
            raise Unauthenticated("the login challenge is invalid or expired; log in again")
        user = await self._user(uid)
        code = code_gen.numeric_code(ctx.config.code_rules.digits)
        expires = await ctx.codes.issue(
            uid, CodePurpose.EMERGENCY, code, ctx.config.code_rules, now
        )
        CODES_SENT.labels("emergency").inc()
        await ctx.events.notify(
            NotificationKind.NOTIFICATION_KIND_EMERGENCY_CODE,
            account_id=str(user["account_id"]),
            recipients=[str(user["email"])],
            params={
                "user_name": _name(user),
                "code": code,
                "expires_minutes": str(int(ctx.config.code_rules.ttl.total_seconds() // 60)),
            },
        )
        return expires

    async def disable_two_factor(
        self, principal: Principal, current_password: str = "", emergency_code: str = ""
    ) -> None:
        ctx, now = self.ctx, self._now()
        if bool(current_password) == bool(emergency_code):
            raise InvalidArgument(
                "current_password", "give exactly one of current_password, emergency_code"
            )
        user = await self._user(principal.user_id)
        if not user.get("totp"):
            raise FailedPrecondition("two-factor authentication is not enabled")
        detail = "re-authenticated by password"
        if current_password:
            await self._reauthenticate(user, current_password, "current_password")
        else:
            if not ctx.config.emergency_codes_enabled:
                raise FailedPrecondition("emergency codes are disabled")
            async with self._attempt(
                user, kind=AuditKind.AUTH_AUDIT_KIND_SECOND_FACTOR_FAILED
            ) as attempt:
                result = await ctx.codes.consume(
                    principal.user_id, CodePurpose.EMERGENCY, emergency_code, now
                )
                if result is not CodeResult.OK:
                    await attempt.failed("wrong emergency code (disable 2FA)")
                    expired = result is CodeResult.EXPIRED
                    raise InvalidArgument(
                        "emergency_code", "has expired" if expired else "is invalid"
                    )
                await attempt.release()
            detail = "emergency code"
        swapped = await ctx.users.compare_and_set(
            principal.user_id,
            {"totp.nonce": user["totp"]["nonce"]},
            {"totp": None, "totp_pending": None, "recovery_codes": []},
        )
        if not swapped:
            raise FailedPrecondition("two-factor settings changed meanwhile; try again")
        used = self._code_used(user, "email") if emergency_code else []
        await ctx.events.all(self._device_event(user, enabled=False, detail=detail), *used)

    async def regenerate_recovery_codes(self, principal: Principal, password: str) -> list[str]:
        user = await self._user(principal.user_id)
        if not user.get("totp"):
            raise FailedPrecondition("two-factor authentication is not enabled")
        await self._reauthenticate(user, password, "current_password")
        plain, digests = await self._new_recovery_codes()
        await self.ctx.users.set_fields(
            principal.user_id, {"recovery_codes": digests, "recovery_set": uuid.uuid4().hex}
        )
        return plain

    async def principal_user(self, principal: Principal) -> Document:
        user = await self.ctx.users.get(principal.user_id)
        if user is None:
            raise NotFound("user not found")
        return user

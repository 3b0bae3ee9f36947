"""The signed-in session: logging in (password, then a second factor when the user has
two-factor authentication on), keeping the tokens in a private file, refreshing the access
token before it expires, and logging out.

The session file (``session.json``, mode 0600, in a 0700 directory) holds the access and
refresh tokens, the access token's expiry and the targets the session was made with; never
a password or a code. Refresh tokens are single use and presenting a spent one revokes the
whole session, so a refresh (read, rotate, save) happens under an exclusive lock on the
directory: two commands run at once do not spend the same token twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc
from tmsp_client.connection import Targets

REFRESH_MARGIN = timedelta(seconds=60)
"""Refresh the access token when it expires within this long."""
SESSION_FILE = "session.json"
LOCK_FILE = "session.lock"


class NotLoggedIn(Exception):
    """No usable session: the user has to run ``tmsp login``. The message, if any, says
    why (an ended session, a damaged file)."""


@dataclass(frozen=True)
class Session:
    """What a completed login yields, plus where it was made. Tokens never show in repr."""

    email: str
    user_id: str
    account_id: str
    session_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_token_expires_at: datetime
    targets: Targets

    @classmethod
    def from_proto(cls, pb: auth_pb2.Session, email: str, targets: Targets) -> Session:
        return cls(
            email=email,
            user_id=pb.user_id,
            account_id=pb.account_id,
            session_id=pb.session_id,
            access_token=pb.access_token,
            refresh_token=pb.refresh_token,
            access_token_expires_at=pb.access_token_expires_at.ToDatetime(tzinfo=UTC),
            targets=targets,
        )

    def rotated(self, pb: auth_pb2.Session) -> Session:
        """This session after a Refresh answered ``pb``."""
        return replace(
            self,
            access_token=pb.access_token,
            refresh_token=pb.refresh_token,
            access_token_expires_at=pb.access_token_expires_at.ToDatetime(tzinfo=UTC),
        )

    def needs_refresh(self, now: datetime) -> bool:
        return self.access_token_expires_at - now <= REFRESH_MARGIN

    def to_json(self) -> str:
        data = asdict(self)
        data["access_token_expires_at"] = self.access_token_expires_at.isoformat()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Session:
        """Raises ValueError on anything but a session file this client wrote."""
        try:
            data: dict[str, Any] = json.loads(text)
            data["targets"] = Targets(**data["targets"])
            expires = datetime.fromisoformat(data["access_token_expires_at"])
            data["access_token_expires_at"] = expires
            session = cls(**data)
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"not a session file ({type(exc).__name__})") from None
        if expires.tzinfo is None or not all(
            isinstance(getattr(session, f), str)
            for f in ("email", "user_id", "account_id", "access_token", "refresh_token")
        ):
            raise ValueError("not a session file")
        return session


class SessionStore:
    """The session file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SESSION_FILE

    def load(self) -> Session | None:
        """The saved session; None when there is none. Raises NotLoggedIn on a damaged file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Session.from_json(text)
        except ValueError as exc:
            raise NotLoggedIn(f"unreadable session file {self.path}: {exc}") from None

    def save(self, session: Session) -> None:
        """Write atomically, readable by the owner only."""
        self._ensure_directory()
        tmp = self.path.with_name(f".{SESSION_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(session.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)  # an older file of that name may have had another mode
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self) -> bool:
        """Remove the session file; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes, for read-refresh-save."""
        self._ensure_directory()
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            os.chmod(self.directory, 0o700)


Refresher = Callable[[str], auth_pb2.Session]
"""Calls auth's Refresh with a refresh token; returns the rotated session."""


class SignedIn:
    """A loaded session that hands out a fresh access token, refreshing when needed."""

    def __init__(
        self,
        store: SessionStore,
        session: Session,
        refresh: Refresher,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.session = session
        self._refresh = refresh
        self._now = now

    def access_token(self) -> str:
        if self.session.needs_refresh(self._now()):
            with self.store.locked():
                current = self.store.load()  # another command may have refreshed meanwhile
                if current is None:
                    raise NotLoggedIn()
                self.session = current
                if current.needs_refresh(self._now()):
                    self.session = current.rotated(self._refreshed(current))
                    self.store.save(self.session)
        return self.session.access_token

    def _refreshed(self, current: Session) -> auth_pb2.Session:
        try:
            return self._refresh(current.refresh_token)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                self.store.delete()  # spent, revoked or expired: it can never work again
                raise NotLoggedIn("the session has ended") from None
            raise


@dataclass(frozen=True)
class LoginResult:
    """A completed login: the session and what to tell the user about it."""

    session: auth_pb2.Session
    offer_two_factor_setup: bool = False
    recovery_codes_left: int | None = None


class SecondFactor:
    """Reads the second factor when auth asks for one; ``emergency`` asks auth to email an
    emergency access code first."""

    def __init__(self, read_code: Callable[[str], str], emergency: bool = False) -> None:
        self.read_code = read_code
        self.emergency = emergency

    def request(self, challenge_id: str) -> auth_pb2.VerifySecondFactorRequest:
        if self.emergency:
            code = self.read_code("Emergency access code (emailed): ")
            return auth_pb2.VerifySecondFactorRequest(
                challenge_id=challenge_id, emergency_code=code
            )
        code = self.read_code("Authenticator code (or a recovery code): ")
        if code.isdigit() and len(code) == 6:
            return auth_pb2.VerifySecondFactorRequest(challenge_id=challenge_id, totp_code=code)
        return auth_pb2.VerifySecondFactorRequest(challenge_id=challenge_id, recovery_code=code)


def login(
    auth: auth_pb2_grpc.AuthServiceStub, email: str, password: str, second: SecondFactor
) -> LoginResult:
    """Login, then VerifySecondFactor if auth answers with a challenge. ``auth`` is the
    stub without a bearer token (these calls are public). Raises grpc.RpcError as the
    server answered."""
    first = auth.Login(auth_pb2.LoginRequest(email=email, password=password))
    if first.HasField("session"):
        return LoginResult(first.session, offer_two_factor_setup=first.offer_two_factor_setup)
    if second.emergency:
        auth.RequestEmergencyCode(
            auth_pb2.RequestEmergencyCodeRequest(challenge_id=first.challenge_id)
        )
    request = second.request(first.challenge_id)
    verified = auth.VerifySecondFactor(request)
    left = verified.recovery_codes_left if request.recovery_code else None
    return LoginResult(verified.session, recovery_codes_left=left)

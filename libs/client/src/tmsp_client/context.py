"""What a command runs with: its arguments, the output, the session and the stubs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc
from tmsp.ingest.v1 import ingest_pb2_grpc
from tmsp.notifier.v1 import notifier_pb2_grpc
from tmsp.reporter.v1 import reporter_pb2_grpc
from tmsp_client.config import ClientSettings, config_dir
from tmsp_client.connection import CallLog, Connection, Targets
from tmsp_client.output import Output
from tmsp_client.session import NotLoggedIn, Session, SessionStore, SignedIn


class UsageError(Exception):
    """A bad combination of arguments the parser cannot see: exit code 2."""


@dataclass
class Context:
    args: argparse.Namespace
    settings: ClientSettings
    out: Output
    store: SessionStore = field(init=False)
    calls: CallLog = field(default_factory=CallLog)
    _conn: Connection | None = None
    _signed: SignedIn | None = None

    def __post_init__(self) -> None:
        self.store = SessionStore(config_dir(self.settings))

    def targets(self, session: Session | None = None) -> Targets:
        """Options and environment first, then the session's, then the defaults."""
        s = self.settings
        saved = session.targets if session else None

        def pick(name: str, remembered: str | None) -> str:
            return s.explicit(name) or remembered or str(getattr(s, name))

        return Targets(
            auth=pick("auth_target", saved.auth if saved else None),
            portal=pick("portal_target", saved.portal if saved else None),
            ingest=pick("ingest_target", saved.ingest if saved else None),
            tls_dir=pick("tls_dir", saved.tls_dir if saved else None),
            notifier=pick("notifier_target", saved.notifier if saved else None),
        )

    def connect(self, session: Session | None = None) -> Connection:
        """The connection (one per run), to the session's targets when there is one."""
        if self._conn is None:
            self._conn = Connection(self.targets(session), log=self.calls)
        return self._conn

    def signed_in(self) -> SignedIn:
        """The saved session, refreshed as calls need it. Raises NotLoggedIn."""
        if self._signed is None:
            session = self.store.load()
            if session is None:
                raise NotLoggedIn()
            conn = self.connect(session)

            def refresh(token: str) -> auth_pb2.Session:
                return conn.public.Refresh(auth_pb2.RefreshRequest(refresh_token=token)).session

            self._signed = SignedIn(self.store, session, refresh, now=lambda: datetime.now(UTC))
            conn.token = self._signed.access_token
        return self._signed

    def _signed_connection(self) -> Connection:
        self.signed_in()
        assert self._conn is not None  # noqa: S101 - signed_in connected
        return self._conn

    @property
    def portal(self) -> reporter_pb2_grpc.ReporterServiceStub:
        return self._signed_connection().portal

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return self._signed_connection().auth

    @property
    def accounts(self) -> auth_pb2_grpc.AccountServiceStub:
        return self._signed_connection().accounts

    @property
    def ingest(self) -> ingest_pb2_grpc.ProductRegistryServiceStub:
        return self._signed_connection().ingest

    @property
    def notifier(self) -> notifier_pb2_grpc.NotificationSettingsServiceStub:
        return self._signed_connection().notifier

    @property
    def account(self) -> str:
        """``--account``, or empty: the caller's own (every account, for operators' lists)."""
        return str(getattr(self.args, "account", "") or "")

    def own_account(self) -> str:
        """``--account``, or the signed-in user's account (for RPCs that need one named)."""
        return self.account or self.signed_in().session.account_id

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

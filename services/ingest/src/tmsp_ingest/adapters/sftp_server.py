"""The SSH log server: SFTP only, one upload directory per product.

Authentication is the product's user name with its password or SSH public key. Each product
is confined to ``<data_dir>/uploads/<product_id>``: asyncssh's virtual chroot normalises
``..``, :meth:`ProductSFTPServer.map_path` additionally resolves links and refuses anything
that lands outside, and creating symlinks or hard links is refused. Shell, exec, SCP and
forwarding are not offered.

Closing a file that was written is the commit point: the file is parsed, every record
published and acknowledged by Kafka, the upload recorded; only then does the close succeed.
If Kafka fails the close returns an SFTP failure, so the appliance uploads again. A file
still open when the session ends (connection lost, client killed) is discarded, never
ingested: its retry is the whole file.

Every open and every commit first confirms the product's standing again: a session opened
before a rotation, a disabling or an account's deletion is refused and closed.

Two directories are special. ``forensics/<task_id>/<file_name>`` receives the answer to a
forensic data request: the task and the name are checked at the open, and the close
publishes the file as is, in chunks, instead of parsing it. ``cleanup-patterns/`` is
virtual and read-only: it lists and serves the account's custom cleanup patterns from the
gateway's store to Threat Mitigators (at the product's download bandwidth).
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh

from tmsp.events.v1 import products_pb2
from tmsp_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tmsp_common.logging import get_logger
from tmsp_ingest import metrics
from tmsp_ingest.domain.intake import UploadTooLarge
from tmsp_ingest.domain.patterns import CleanupPattern
from tmsp_ingest.domain.products import Kind, Refusal
from tmsp_ingest.service_layer.authenticate import (
    Authenticated,
    AuthenticationFailed,
    SessionStanding,
)
from tmsp_ingest.service_layer.gateway import Gateway
from tmsp_ingest.service_layer.intake import Hold

log = get_logger(__name__)
AUTH_INFO = "tmsp_auth"
WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
FORENSICS = "forensics"
PATTERNS = "cleanup-patterns"
FORENSIC_PLACE = "forensic data goes to forensics/<task_id>/<file_name>"
READ_ONLY = "cleanup patterns are read-only"


def client_parts(path: bytes) -> tuple[str, ...]:
    """The components of a client's path inside its virtual root (as asyncssh's chroot
    normalises it: relative to the root, ``..`` cannot leave it)."""
    normal = posixpath.normpath(posixpath.join(b"/", path))
    return tuple(p.decode(errors="surrogateescape") for p in normal.split(b"/") if p)


def _attrs(pattern: CleanupPattern | None) -> asyncssh.SFTPAttrs:
    """A read-only file (``pattern``) or the read-only directory of patterns (None)."""
    if pattern is None:
        return asyncssh.SFTPAttrs(
            type=asyncssh.FILEXFER_TYPE_DIRECTORY, permissions=stat.S_IFDIR | 0o555
        )
    when = int(pattern.updated_at.timestamp()) if pattern.updated_at else None
    return asyncssh.SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_REGULAR,
        size=pattern.size,
        permissions=stat.S_IFREG | 0o444,
        atime=when,
        mtime=when,
    )


def ensure_host_key(data_dir: str) -> Path:
    """The server's persistent Ed25519 host key, generated on first start (mode 0600)."""
    path = Path(data_dir) / "ssh_host_ed25519_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        tmp.replace(path)
    return path


class _OpenFile:
    __slots__ = ("failed", "file", "limit", "name", "path", "size", "task_id", "writing")

    def __init__(
        self, file: Any, name: str, path: str, writing: bool, limit: int, task_id: str | None
    ) -> None:
        self.file = file
        self.name = name
        self.path = path
        self.writing = writing
        self.limit = limit
        self.task_id = task_id
        """The forensic data request a file in ``forensics/<task_id>/`` answers."""
        self.size = 0
        self.failed = False


class _PatternFile:
    __slots__ = ("pattern",)

    def __init__(self, pattern: CleanupPattern) -> None:
        self.pattern = pattern


class ProductSFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], gateway: Gateway, root: Path):
        who: Authenticated = chan.get_extra_info(AUTH_INFO)
        self.standing = SessionStanding(gateway.auth, who, "sftp")
        self.chan = chan
        self.gateway = gateway
        home = root / who.product.product_id
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home = os.path.realpath(home).encode()
        super().__init__(chan, chroot=self.home)

    @property
    def who(self) -> Authenticated:
        return self.standing.who

    async def _confirm_standing(self) -> None:
        """Raises SFTPPermissionDenied and ends the connection (once the answer is sent) when
        the product lost its standing since the login."""
        try:
            await self.standing.confirm()
        except AuthenticationFailed as exc:
            asyncio.get_running_loop().call_soon(self.chan.get_connection().close)
            raise asyncssh.SFTPPermissionDenied(f"refused: {exc.reason}") from None

    def map_path(self, path: bytes) -> bytes:
        mapped = super().map_path(path)
        real = os.path.realpath(mapped)
        if real != self.home and not real.startswith(self.home + b"/"):
            raise asyncssh.SFTPPermissionDenied("outside the upload directory")
        return mapped

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        parts = client_parts(path)
        writing = bool(pflags & WRITE_FLAGS)
        if parts[:1] == (PATTERNS,):
            if writing:
                raise asyncssh.SFTPPermissionDenied(READ_ONLY)
            await self._confirm_standing()
            return _PatternFile(await self._pattern(parts, download=True))
        mapped = self.map_path(path)
        if os.path.islink(mapped):
            raise asyncssh.SFTPPermissionDenied("links are not allowed")
        await self._confirm_standing()
        task_id = None
        if writing and parts[:1] == (FORENSICS,):
            if len(parts) != 3:
                raise asyncssh.SFTPPermissionDenied(FORENSIC_PLACE)
            task_id = parts[1]
            try:
                await self.gateway.forensics.accepts(self.who.product, task_id, parts[2])
            except (InvalidArgument, NotFound, FailedPrecondition) as exc:
                raise asyncssh.SFTPPermissionDenied(f"refused: {exc.message}") from None
        file_obj = super().open(path, pflags, attrs)
        name = os.path.basename(mapped).decode(errors="replace")
        limit = self.gateway.forensics.max_bytes if task_id else self.gateway.max_upload_bytes
        return _OpenFile(
            file_obj,
            name,
            mapped.decode(errors="surrogateescape"),
            writing,
            limit,
            task_id,
        )

    async def _pattern(self, parts: tuple[str, ...], *, download: bool) -> CleanupPattern:
        """The pattern ``cleanup-patterns/<name>`` names, as the HTTPS download sees it
        (``download``: counted as one)."""
        if len(parts) != 2:
            raise asyncssh.SFTPNoSuchFile("no such file")
        product = self.who.product
        try:
            if download:
                return await self.gateway.pattern(product, parts[1], protocol_label="sftp")
            return await self.gateway.patterns.download(product, parts[1])
        except (NotFound, InvalidArgument) as exc:
            raise asyncssh.SFTPNoSuchFile(exc.message) from None
        except PermissionDenied as exc:
            raise asyncssh.SFTPPermissionDenied(exc.message) from None

    async def _virtual_attrs(self, parts: tuple[str, ...]) -> asyncssh.SFTPAttrs:
        if len(parts) == 1:
            if self.who.product.kind is not Kind.THREAT_MITIGATOR:
                raise asyncssh.SFTPPermissionDenied("cleanup patterns are for Threat Mitigators")
            return _attrs(None)
        return _attrs(await self._pattern(parts, download=False))

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs | os.stat_result:
        parts = client_parts(path)
        if parts[:1] == (PATTERNS,):
            return await self._virtual_attrs(parts)
        return os.stat(self.map_path(path))

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs | os.stat_result:
        parts = client_parts(path)
        if parts[:1] == (PATTERNS,):
            return await self._virtual_attrs(parts)
        return os.lstat(self.map_path(path))

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs | os.stat_result:
        if isinstance(file_obj, _PatternFile):
            return _attrs(file_obj.pattern)
        if not isinstance(file_obj, _OpenFile):
            raise asyncssh.SFTPFailure("unknown handle")
        file_obj.file.flush()
        return os.fstat(file_obj.file.fileno())

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        parts = client_parts(path)
        if parts[:1] != (PATTERNS,):
            async for entry in super().scandir(path):
                yield entry
            if not parts and self.who.product.kind is Kind.THREAT_MITIGATOR:
                yield asyncssh.SFTPName(PATTERNS.encode(), attrs=_attrs(None))
            return
        await self._virtual_attrs(parts[:1])  # refuses a TDA
        if len(parts) != 1:
            raise asyncssh.SFTPNoSuchFile("no such directory")
        for name in (b".", b".."):
            yield asyncssh.SFTPName(name, attrs=_attrs(None))
        for pattern in await self.gateway.patterns.listing(self.who.product):
            yield asyncssh.SFTPName(pattern.name.encode(), attrs=_attrs(pattern))

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        parts = client_parts(path)
        if parts[:1] == (PATTERNS,):
            raise asyncssh.SFTPPermissionDenied(READ_ONLY)
        if parts[:1] == (FORENSICS,) and len(parts) > 2:
            raise asyncssh.SFTPPermissionDenied(FORENSIC_PLACE)
        super().mkdir(path, attrs)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        """At the product's download bandwidth, metered by the bytes actually sent."""
        if isinstance(file_obj, _PatternFile):
            data = file_obj.pattern.content[offset : offset + size]
        elif isinstance(file_obj, _OpenFile):
            file_obj.file.seek(offset)
            data = file_obj.file.read(size)
        else:
            raise asyncssh.SFTPFailure("unknown handle")
        await self.gateway.bandwidth.download(self.who.product, len(data))
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _OpenFile):
            raise asyncssh.SFTPPermissionDenied(READ_ONLY)
        end = offset + len(data)
        if end > file_obj.limit:
            file_obj.failed = True  # the close discards it instead of ingesting a prefix
            raise asyncssh.SFTPFailure(f"file larger than {file_obj.limit} bytes")
        await self.gateway.bandwidth.upload(self.who.product, len(data))
        file_obj.file.seek(offset)
        file_obj.file.write(data)
        file_obj.size = max(file_obj.size, end)
        return len(data)

    def _session_ended(self) -> bool:
        """True when the client is gone or sent EOF. asyncssh closes the handles still open
        when the session ends; such a close is an interrupted upload, not a commit. (The
        channel's receive state has no public accessor in asyncssh 2.x.)"""
        return self.chan.is_closing() or getattr(self.chan, "_recv_state", "open") != "open"

    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _PatternFile):
            return
        if not isinstance(file_obj, _OpenFile):
            raise asyncssh.SFTPFailure("unknown handle")
        file_obj.file.close()
        if not file_obj.writing:
            return
        if self._session_ended():
            Path(file_obj.path).unlink(missing_ok=True)
            log.info(
                "interrupted upload discarded",
                product_id=self.who.product.product_id,
                file=file_obj.name,
                bytes=file_obj.size,
            )
            return
        if file_obj.failed:
            Path(file_obj.path).unlink(missing_ok=True)
            raise asyncssh.SFTPFailure("upload refused: file too large")
        try:
            with self.gateway.intake.hold() as hold:
                await self._confirm_standing()  # the file is discarded below when refused
                path = Path(file_obj.path)
                await hold.add(path.stat().st_size)
                data = path.read_bytes()
                if file_obj.task_id is not None:
                    await self._commit_forensic_data(file_obj, file_obj.task_id, data, hold)
                elif data:
                    await self._commit_log(file_obj, data, hold)
        except Unavailable as exc:
            log.warning(
                "upload not acknowledged",
                product_id=self.who.product.product_id,
                reason=exc.message,
            )
            raise asyncssh.SFTPFailure(f"upload not accepted, retry: {exc.message}") from None
        except (UploadTooLarge, InvalidArgument) as exc:
            raise asyncssh.SFTPFailure(f"upload refused: {exc}") from None
        except (NotFound, FailedPrecondition) as exc:
            raise asyncssh.SFTPPermissionDenied(f"refused: {exc.message}") from None
        finally:
            Path(file_obj.path).unlink(missing_ok=True)

    async def _commit_log(self, file_obj: _OpenFile, data: bytes, hold: Hold) -> None:
        outcome = await self.gateway.ingest(
            self.who.product,
            file_obj.name,
            data,
            protocol=products_pb2.UPLOAD_PROTOCOL_SSH,
            protocol_label="sftp",
            hold=hold,
        )
        log.info(
            "upload received",
            product_id=self.who.product.product_id,
            file=file_obj.name,
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            duplicate=outcome.duplicate,
        )

    async def _commit_forensic_data(
        self, file_obj: _OpenFile, task_id: str, data: bytes, hold: Hold
    ) -> None:
        await self.gateway.forensic_upload(
            self.who.product,
            task_id,
            file_obj.name,
            data,
            protocol=products_pb2.UPLOAD_PROTOCOL_SSH,
            protocol_label="sftp",
            hold=hold,
        )

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not allowed")


KEY_NOT_PROVEN = "key not proven"
"""The failure reason (metric label) of a connection that offered a registered key and
closed without proving it."""


class ProductSSHServer(asyncssh.SSHServer):
    """Per-connection authentication against the registry."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = "?"
        self.key_accepted = False
        """A registered key was offered (and accepted for its signature to be checked)."""
        self.authenticated = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "?"
        metrics.ACTIVE_SESSIONS.labels("sftp").inc()

    def connection_lost(self, exc: Exception | None) -> None:
        metrics.ACTIVE_SESSIONS.labels("sftp").dec()
        if self.key_accepted and not self.authenticated:
            # asyncssh verifies a key's signature after validate_public_key and has no hook
            # for a bad one: a connection that offered a registered key and never proved it
            # (a bad signature, or no private key) is one failed authentication of its source
            self.gateway.auth.key_not_proven(self.source)
            metrics.AUTH_FAILURES.labels("sftp", KEY_NOT_PROVEN).inc()
            log.info("ssh key offered and never proven", source=self.source)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def _refused(self, exc: AuthenticationFailed) -> bool:
        metrics.AUTH_FAILURES.labels("sftp", exc.reason).inc()
        if self.conn is not None and exc.reason != Refusal.BAD_CREDENTIALS:
            self.conn.send_auth_banner(f"TMSP: {exc.reason}\n")
        return False

    def _accepted(self, who: Authenticated) -> bool:
        if self.conn is None:
            return False
        self.conn.set_extra_info(**{AUTH_INFO: who})
        return True

    def auth_completed(self) -> None:
        """asyncssh calls this only once authentication succeeded: for a public key after
        the signature was verified, never for the unsigned "would you accept this key?"
        probe, which must not clear the source's failed-login count."""
        self.authenticated = True
        self.gateway.auth.succeeded(self.source)

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            who = await self.gateway.auth.with_password(username, password, self.source)
        except AuthenticationFailed as exc:
            return self._refused(exc)
        return self._accepted(who)

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        blob = key.export_public_key("openssh").decode()
        try:
            who = await self.gateway.auth.with_public_key(username, blob, self.source)
        except AuthenticationFailed as exc:
            return self._refused(exc)
        self.key_accepted = True
        return self._accepted(who)


async def start_sftp(
    gateway: Gateway, host: str, port: int, data_dir: str
) -> tuple[asyncssh.SSHAcceptor, int]:
    key_path = ensure_host_key(data_dir)
    root = Path(data_dir) / "uploads"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    acceptor = await asyncssh.create_server(
        lambda: ProductSSHServer(gateway),
        host,
        port,
        server_host_keys=[str(key_path)],
        sftp_factory=lambda chan: ProductSFTPServer(chan, gateway, root),
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_pty=False,
        login_timeout=30,
    )
    bound = acceptor.sockets[0].getsockname()[1] if acceptor.sockets else port
    return acceptor, bound

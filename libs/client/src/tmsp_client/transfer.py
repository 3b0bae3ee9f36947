"""Streamed downloads (reports, consolidated logs, forensic data) into a file or stdout.
Forensic data stays readable by its owner only (0600).

Bytes go to a temporary file next to the destination and take its name only once the
stream ended and, where the server gave one, the SHA-256 matched: a failed or tampered
download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

from tmsp_client.output import Progress

STDOUT = "-"


class DownloadError(Exception):
    """The download cannot be saved: one line saying why."""


def safe_name(name: str, fallback: str) -> str:
    """A file name from the server (a product chose it) reduced to a plain name in the
    current directory: no directories, no control characters; ``fallback`` if nothing is
    left."""
    base = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
    base = base.strip().lstrip(".")
    return base or fallback


class Download:
    """One download: ``start`` once the name is known, ``write`` each chunk, ``finish``."""

    def __init__(
        self, label: str, output: str | None, *, private: bool = False, err: TextIO | None = None
    ) -> None:
        self.label = label
        self.output = output
        self.private = private
        self.progress = Progress(label, err)
        self.digest = hashlib.sha256()
        self.dest: Path | None = None
        self._tmp: BinaryIO | None = None
        self._tmp_path: Path | None = None

    def start(self, default_name: str) -> None:
        """Choose the destination (``-o``, a directory ``-o`` names, or ``default_name`` in
        the current directory, which must not exist yet) and open the temporary file."""
        if self.output == STDOUT:
            fd, tmp = tempfile.mkstemp(prefix="tmsp-download-")
        else:
            if self.output is None:
                dest = Path(default_name)
                if dest.exists():
                    raise DownloadError(f"{dest} exists: name another file with -o")
            else:
                dest = Path(self.output)
                if dest.is_dir():
                    dest = dest / default_name
            self.dest = dest
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        self._tmp_path = Path(tmp)
        self._tmp = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._tmp is None:
            raise DownloadError("the server sent data before describing it")
        self._tmp.write(chunk)
        self.digest.update(chunk)
        self.progress.add(len(chunk))

    def finish(self, expected_sha256: str = "") -> str:
        """Check the SHA-256 (when expected), move the file into place (or copy it to
        stdout); returns where it went. Raises DownloadError on a mismatch."""
        if self._tmp is None or self._tmp_path is None:
            raise DownloadError("the server sent nothing")
        self._tmp.close()
        got = self.digest.hexdigest()
        if expected_sha256 and got != expected_sha256.lower():
            self.progress.abandon()
            raise DownloadError(
                f"SHA-256 mismatch: the server announced {expected_sha256}, the "
                f"{self.progress.received} bytes received hash to {got}; nothing saved"
            )
        if self.dest is None:
            with self._tmp_path.open("rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            self._tmp_path.unlink()
            where = "stdout"
        else:
            if not self.private:  # a temporary file is 0600; ordinary files as umask says
                os.chmod(self._tmp_path, 0o666 & ~_umask())
            self._tmp_path.replace(self.dest)
            where = str(self.dest)
        self._tmp_path = None
        suffix = ", SHA-256 checked" if expected_sha256 else ""
        self.progress.done(f"{where}{suffix}")
        return where

    def __enter__(self) -> Download:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tmp_path is not None:
            if self._tmp is not None:
                self._tmp.close()
            self._tmp_path.unlink(missing_ok=True)
            self.progress.abandon()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PrivateFile:
    """A file only its owner may read (0600: credentials, a TOTP secret's QR code), written
    whole or not at all. The temporary file next to ``path`` is made at once, before the
    answer it is to hold is asked for: a path that cannot be written fails first, and a
    secret shown only once is not lost to it. ``path`` is replaced if it exists."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise DownloadError(f"{self.path} is a directory: name a file")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as exc:
            raise DownloadError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._tmp: Path | None = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def commit(self, data: bytes) -> None:
        """Write ``data`` and move the file into place."""
        if self._tmp is None:
            raise DownloadError(f"{self.path} was written already")
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self._tmp, 0o600)
        self._tmp.replace(self.path)
        self._tmp = None

    def discard(self) -> None:
        """Remove the temporary file unless it was committed."""
        if self._tmp is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> PrivateFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

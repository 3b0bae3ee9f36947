"""Downloads land in place only complete and, where a SHA-256 was given, matching it."""

from __future__ import annotations

import hashlib
import io
import stat
from pathlib import Path

import pytest

from tmsp_client.transfer import Download, DownloadError, safe_name

DATA = b"%PDF-1.7 " + b"x" * 1000


def fetch(tmp: Path, output: str | None, expected: str, private: bool = False) -> str:
    with Download("report", output, private=private, err=io.StringIO()) as download:
        download.start("r.pdf")
        download.write(DATA[:500])
        download.write(DATA[500:])
        return download.finish(expected)


def test_saved_under_the_given_name_after_checking_the_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    where = fetch(tmp_path, None, hashlib.sha256(DATA).hexdigest())
    assert where == "r.pdf" and (tmp_path / "r.pdf").read_bytes() == DATA
    assert [p.name for p in tmp_path.iterdir()] == ["r.pdf"]
    with pytest.raises(DownloadError, match="r.pdf exists"):
        fetch(tmp_path, None, "")
    into_dir = tmp_path / "out"
    into_dir.mkdir()
    assert fetch(tmp_path, str(into_dir), "") == str(into_dir / "r.pdf")


def test_a_mismatch_fails_loudly_and_saves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "evidence.bin"
    with pytest.raises(DownloadError, match="SHA-256 mismatch: the server announced 00ff"):
        fetch(tmp_path, str(target), "00ff")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_stream_leaves_no_partial_file(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError),
        Download("logs", str(tmp_path / "l.csv"), err=io.StringIO()) as d,
    ):
        d.start("l.csv")
        d.write(b"a,b\n")
        raise RuntimeError("stream broke")
    assert list(tmp_path.iterdir()) == []


def test_forensic_data_stays_private(tmp_path: Path) -> None:
    fetch(tmp_path, str(tmp_path / "f.bin"), "", private=True)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("memory.dmp", "memory.dmp"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("..", "fallback"),
        (".hidden", "hidden"),
        ("", "fallback"),
        ("bad\x1bname\n.txt", "badname.txt"),
    ],
)
def test_server_file_names_stay_in_the_current_directory(name: str, safe: str) -> None:
    assert safe_name(name, "fallback") == safe

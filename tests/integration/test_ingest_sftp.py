"""The SSH log server with the real OpenSSH ``sftp`` client (sshpass for the password) and
with asyncssh (public-key authentication), against real Kafka and Mongo.

Needs ``sftp`` (openssh-client) and ``sshpass`` on the PATH: CI must
``apt-get install openssh-client sshpass``; without them these tests fail, naming the tool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from tmsp.events.v1 import detections_pb2, status_pb2
from tmsp.ingest.v1 import ingest_pb2
from tmsp_common.grpc_client import bearer
from tmsp_common.kafka import topics
from tmsp_common.testing import TopicReader, wait_until
from tmsp_ingest.harness import Gateway, openssh_sftp

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.mongo, pytest.mark.ssh]

MAX_UPLOAD = 64 * 1024
CEF = b"".join(
    b"CEF:0|Trend Micro|TDA|2.5|%d|Worm %d|7|src=10.0.0.%d dst=10.1.0.1 dpt=445\n" % (i, i, i)
    for i in range(1, 6)
)


@pytest.fixture
async def gateway(infra, names, tmp_path: Path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(
        infra.kafka_bootstrap,
        infra.mongo_url,
        names.prefix,
        names.database("ingest"),
        tmp_path,
        extra_env={"TMSP_INGEST_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)},
    )
    gw.start()
    await gw.publish_account("acct-a", "owner@a.example")
    yield gw
    gw.stop()


async def test_openssh_upload_lands_once_and_the_host_key_persists(
    gateway: Gateway, tmp_path: Path
) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    creds = reg.credentials
    (tmp_path / "tda.log").write_bytes(CEF)
    done = openssh_sftp(gateway, creds.user_name, creds.password, "put tda.log\n", tmp_path)
    assert done.returncode == 0, done.stderr
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        dets = await r.read_events(detections_pb2.Detection, 5, timeout=20)
    assert sorted(d.threat_name for d in dets) == [f"Worm {i}" for i in range(1, 6)]
    assert {d.source_file for d in dets} == {"tda.log"}
    # The same file again (a retry): acknowledged, not published twice.
    again = openssh_sftp(gateway, creds.user_name, creds.password, "put tda.log\n", tmp_path)
    assert again.returncode == 0, again.stderr
    async with TopicReader(gateway.kafka_bootstrap, topics.UPLOADS, gateway.prefix) as r:
        (upload,) = await r.read_events(status_pb2.UploadReceived, 1, timeout=20)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 1, timeout=3)
    assert upload.records_accepted == 5 and upload.protocol == 1
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 5, timeout=3)

    key_file = gateway.workdir / "data" / "ssh_host_ed25519_key"
    first_key = key_file.read_bytes()
    gateway.stop()
    gateway.start()
    assert key_file.read_bytes() == first_key
    # known_hosts from the first run still matches: StrictHostKeyChecking=yes passes.
    third = openssh_sftp(gateway, creds.user_name, creds.password, "ls\n", tmp_path, strict=True)
    assert third.returncode == 0, third.stderr


async def test_refusals(gateway: Gateway, tmp_path: Path) -> None:
    reg = await gateway.register("acct-a", "owner@a.example")
    user, password = reg.credentials.user_name, reg.credentials.password

    wrong = openssh_sftp(gateway, user, password + "x", "ls\n", tmp_path)
    assert wrong.returncode != 0

    (tmp_path / "big.log").write_bytes(b"x" * (MAX_UPLOAD + 1))
    big = openssh_sftp(gateway, user, password, "put big.log\n", tmp_path)
    assert big.returncode != 0 and "Failure" in big.stderr
    assert not list((gateway.workdir / "data" / "uploads").rglob("big.log"))

    (tmp_path / "ok.log").write_bytes(CEF)
    commands = "put ok.log keep.log\nsymlink /etc/passwd pw\n"
    link = openssh_sftp(gateway, user, password, commands, tmp_path)
    assert link.returncode != 0 and "ermission denied" in link.stderr

    # Traversal is confined to the product's own directory.
    escape = openssh_sftp(gateway, user, password, "put ok.log ../../../escaped.log\n", tmp_path)
    assert escape.returncode == 0, escape.stderr
    assert not list(gateway.workdir.rglob("escaped.log"))[1:]  # at most the confined copy
    for found in gateway.workdir.rglob("escaped.log"):
        assert found.parent.name == reg.product.product_id
    commands = "get /../../ssh_host_ed25519_key stolen\n"
    outside = openssh_sftp(gateway, user, password, commands, tmp_path)
    assert outside.returncode != 0 and not (tmp_path / "stolen").exists()

    # Good credentials, disabled product: refused, and the banner says why.
    chan, stub = gateway.stub()
    await stub.DisableProduct(
        ingest_pb2.DisableProductRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    await chan.close()
    disabled = openssh_sftp(gateway, user, password, "ls\n", tmp_path)
    assert disabled.returncode != 0 and "TMSP: product disabled" in disabled.stderr


async def test_asyncssh_public_key_and_other_products_files(
    gateway: Gateway, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    reg_a = await gateway.register("acct-a", "owner@a.example", ssh_public_key=public)
    reg_b = await gateway.register("acct-a", "owner@a.example")
    # A file that sits in product B's directory (e.g. an upload in progress).
    b_dir = gateway.workdir / "data" / "uploads" / reg_b.product.product_id
    b_dir.mkdir(parents=True, exist_ok=True)
    (b_dir / "secret.log").write_bytes(b"product B only")

    async with (
        gateway.sftp_connect(reg_a.credentials.user_name, key=key) as conn,
        conn.start_sftp_client() as sftp,
    ):
        async with sftp.open("eve.json", "wb") as fh:
            await fh.write(
                b'{"timestamp":"2026-11-20T09:00:00Z","event_type":"alert",'
                b'"src_ip":"10.0.0.1","alert":{"signature":"ET Y","severity":1}}\n'
            )
        for path in (
            f"/../{reg_b.product.product_id}/secret.log",
            f"../{reg_b.product.product_id}/secret.log",
            "/../../ssh_host_ed25519_key",
        ):
            with pytest.raises(asyncssh.SFTPError):
                async with sftp.open(path, "rb") as fh:
                    await fh.read()
        assert await sftp.listdir("/..") == await sftp.listdir("/")
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        (det,) = await r.read_events(detections_pb2.Detection, 1, timeout=20)
    assert det.threat_name == "ET Y" and det.product_id == reg_a.product.product_id

    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await gateway.sftp_connect(reg_a.credentials.user_name, key=other)


async def test_upload_bandwidth_is_enforced(gateway: Gateway) -> None:
    """1024 B/s with a one-second burst: closing a 5 KiB file cannot succeed in under 4 s."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    reg = await gateway.register(
        "acct-a",
        "owner@a.example",
        ssh_public_key=key.export_public_key().decode().strip(),
        upload_bandwidth_bytes_per_second=1024,
    )
    body = b"".join(
        b"CEF:0|TM|TDA|1|%d|Slow %d|5|src=10.0.0.1 msg=%s\n" % (i, i, b"x" * 60) for i in range(64)
    )
    assert len(body) >= 5 * 1024
    elapsed = await gateway.sftp_put(reg.credentials.user_name, "slow.log", body, key=key)
    assert elapsed >= (len(body) - 1024) / 1024 * 0.95
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        await r.read_events(detections_pb2.Detection, 64, timeout=20)


@pytest.mark.parametrize("ending", ["abort", "channel_eof"])
async def test_an_interrupted_upload_is_discarded_and_the_retry_lands_once(
    gateway: Gateway, ending: str
) -> None:
    """A session that ends with the file still open (connection dropped, or the client
    closing its SFTP channel) must not commit the partial file."""
    reg = await gateway.register("acct-a", "owner@a.example")
    user, password = reg.credentials.user_name, reg.credentials.password
    conn = await gateway.sftp_connect(user, password=password)
    sftp = await conn.start_sftp_client()
    fh = await sftp.open("tda.log", "wb")
    await fh.write(CEF[: len(CEF) // 2])  # two and a half records
    if ending == "abort":
        conn.abort()
    else:
        sftp.exit()
        await sftp.wait_closed()
        conn.close()
    await conn.wait_closed()
    uploads = gateway.workdir / "data" / "uploads" / reg.product.product_id

    async def nothing_left() -> bool:
        return not list(uploads.iterdir())

    await wait_until(nothing_left, timeout=10, interval=0.2)

    await gateway.sftp_put(user, "tda.log", CEF, password=password)
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 5, timeout=20)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 5, timeout=3)
    assert len(records) == 5
    async with TopicReader(gateway.kafka_bootstrap, topics.INGEST_REJECTED, gateway.prefix) as r:
        with pytest.raises(TimeoutError):  # the half line was never parsed
            await r.read_until(lambda rs: len(rs) > 0, timeout=2)
    async with TopicReader(gateway.kafka_bootstrap, topics.UPLOADS, gateway.prefix) as r:
        (done,) = await r.read_events(status_pb2.UploadReceived, 1, timeout=20)
    assert done.records_accepted == 5


async def test_open_sessions_are_refused_and_closed_once_the_product_is_disabled(
    gateway: Gateway,
) -> None:
    """Sessions opened before the disabling: the next open is refused, a file already open
    is not committed at its close, and both connections are ended."""
    reg = await gateway.register("acct-a", "owner@a.example")
    user, password = reg.credentials.user_name, reg.credentials.password
    opener = await gateway.sftp_connect(user, password=password)
    opener_sftp = await opener.start_sftp_client()
    async with opener_sftp.open("before.log", "wb") as fh:
        await fh.write(CEF)
    writer = await gateway.sftp_connect(user, password=password)
    writer_sftp = await writer.start_sftp_client()
    open_file = await writer_sftp.open("open.log", "wb")
    await open_file.write(CEF.replace(b"Worm", b"Late"))

    chan, stub = gateway.stub()
    await stub.DisableProduct(
        ingest_pb2.DisableProductRequest(product_id=reg.product.product_id),
        metadata=bearer(gateway.token()),
    )
    await chan.close()

    with pytest.raises(asyncssh.SFTPError, match="product disabled"):
        await open_file.close()
    with pytest.raises(asyncssh.SFTPError, match="product disabled"):
        await opener_sftp.open("after.log", "wb")
    for conn in (opener, writer):
        await asyncio.wait_for(conn.wait_closed(), 10)
    uploads = gateway.workdir / "data" / "uploads" / reg.product.product_id
    assert list(uploads.iterdir()) == []
    async with TopicReader(gateway.kafka_bootstrap, topics.DETECTIONS, gateway.prefix) as r:
        records = await r.read_until(lambda rs: len(rs) >= 5, timeout=20)
        with pytest.raises(TimeoutError):
            await r.read_until(lambda rs: len(rs) > 5, timeout=3)
    assert len(records) == 5
    assert gateway.process is not None
    assert "session closed: the product may no longer connect" in gateway.process.logs


class PublicKeyOnly(asyncssh.SSHKeyPair):
    """What anyone may hold: a product's public key without its private half. asyncssh asks
    the server whether it would accept the key (unsigned), then cannot sign."""

    def __init__(self, public: asyncssh.SSHKey) -> None:
        super().__init__(
            public.algorithm,
            public.algorithm,
            public.sig_algorithms,
            public.sig_algorithms,
            public.public_data,
            None,
        )

    def sign(self, data: bytes) -> bytes:
        raise ValueError("no private key")


async def keyed_product(
    gateway: Gateway,
) -> tuple[asyncssh.SSHKey, Callable[..., Awaitable[None]], str]:
    """A product registered with an SSH key: the key, a login as the product (keyword
    arguments go to ``asyncssh.connect``), and its password."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    reg = await gateway.register(
        "acct-a", "owner@a.example", ssh_public_key=key.export_public_key().decode().strip()
    )
    user = reg.credentials.user_name

    async def login(**how: object) -> None:
        conn = await asyncssh.connect(
            "127.0.0.1", gateway.ports["sftp"], username=user, known_hosts=None, **how
        )
        conn.close()

    return key, login, reg.credentials.password


async def test_a_public_key_probe_does_not_reset_the_failed_login_throttle(
    gateway: Gateway,
) -> None:
    """Password guesses interleaved with "would you accept this key?" probes for the
    product's (public) key must still run into AUTH_FAILURE_LIMIT (10)."""
    key, login, password = await keyed_product(gateway)

    for guess in range(9):
        with pytest.raises(asyncssh.PermissionDenied):
            await login(password=f"guess-{guess}", client_keys=None)
    with pytest.raises(asyncssh.PermissionDenied):  # the probe is answered "yes", no login
        await login(client_keys=[PublicKeyOnly(key.convert_to_public())])
    with pytest.raises(asyncssh.PermissionDenied):
        await login(password="guess-9", client_keys=None)
    with pytest.raises(asyncssh.PermissionDenied):  # throttled: even the right password
        await login(password=password, client_keys=None)


async def test_a_registered_key_offered_and_never_proven_counts_as_a_failed_login(
    gateway: Gateway,
) -> None:
    """Who holds only a product's public key gets "yes" to the unsigned probe and then
    cannot sign: each such connection is a failed authentication of its source, so after
    AUTH_FAILURE_LIMIT (10) of them even the right password is refused."""
    key, login, password = await keyed_product(gateway)

    assert gateway.process is not None
    for _ in range(10):
        with pytest.raises(asyncssh.PermissionDenied):
            await login(client_keys=[PublicKeyOnly(key.convert_to_public())])
    # counted when the server sees the connection end
    await wait_until(
        lambda: gateway.process.logs.count("ssh key offered and never proven") >= 10, timeout=10
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await login(password=password, client_keys=None)

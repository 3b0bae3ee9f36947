"""Integration-test support: run the gateway as deployed and talk to it as an operator.

Used by ``tests/integration/test_ingest_*.py`` and ``bench/bench_ingest.py``; the helpers
at the end drive it with the real clients (curl, OpenSSH ``sftp`` + sshpass). Starts
``python -m tmsp_ingest`` with its own ports, data and TLS directories, a topic prefix and a
database; signs real access tokens with a fresh Ed25519 key whose public half the gateway
is configured with; publishes account snapshots to the accounts topic like auth does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tmsp.events.v1 import accounts_pb2, products_pb2
from tmsp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tmsp_common.authn import Principal, Role
from tmsp_common.grpc_client import bearer, channel
from tmsp_common.kafka import topics
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.testing import ServiceProcess, free_port
from tmsp_common.tokens import TokenSigner, public_pem

OPERATOR = Principal("op-1", "provider", frozenset({Role.PROVIDER_OPERATOR}))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 15.0) -> bool:
    """True once the gateway closed the stream (EOF or a reset), False while it stays open
    after ``timeout`` seconds; data the server sends is read and ignored."""
    try:
        await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


@dataclass
class Gateway:
    """One running gateway process and what a test needs to reach it."""

    kafka_bootstrap: str
    mongo_url: str
    prefix: str
    database: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    process: ServiceProcess | None = None
    signer: TokenSigner | None = None
    public_keys: str = ""

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def env(self) -> dict[str, str]:
        if not self.ports:
            for name in ("grpc", "sftp", "https", "status", "syslog", "metrics"):
                self.ports[name] = free_port()
        if self.signer is None:
            key = Ed25519PrivateKey.generate()
            self.signer = TokenSigner(key, "it-key")
            self.public_keys = json.dumps({"it-key": public_pem(key).decode()})
        return {
            "TMSP_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TMSP_MONGO_URL": self.mongo_url,
            "TMSP_TOPIC_PREFIX": self.prefix,
            "TMSP_TLS_DIR": str(self.tls_dir),
            "TMSP_INGEST_MONGO_DATABASE": self.database,
            "TMSP_INGEST_DATA_DIR": str(self.workdir / "data"),
            "TMSP_INGEST_BIND_HOST": "127.0.0.1",
            "TMSP_INGEST_GRPC_PORT": str(self.ports["grpc"]),
            "TMSP_INGEST_SFTP_PORT": str(self.ports["sftp"]),
            "TMSP_INGEST_HTTPS_PORT": str(self.ports["https"]),
            "TMSP_INGEST_STATUS_PORT": str(self.ports["status"]),
            "TMSP_INGEST_SYSLOG_TLS_PORT": str(self.ports["syslog"]),
            "TMSP_INGEST_METRICS_PORT": str(self.ports["metrics"]),
            "TMSP_INGEST_AUTH_PUBLIC_KEYS": self.public_keys,
            "TMSP_INGEST_ARGON2_TIME_COST": "1",
            "TMSP_INGEST_ARGON2_MEMORY_KIB": "8192",
            "TMSP_INGEST_ACCOUNTS_GROUP": f"{self.prefix}ingest-accounts",
            "TMSP_INGEST_TASKS_GROUP": f"{self.prefix}ingest-tasks",
            "TMSP_INGEST_PATTERNS_GROUP": f"{self.prefix}ingest-patterns",
            "TMSP_INGEST_PARSE_WORKERS": "0",
            **self.extra_env,
        }

    def start(self, timeout: float = 60.0) -> Gateway:
        self.process = ServiceProcess("tmsp_ingest", env=self.env()).start()
        try:
            self.process.wait_for_log("service ready", timeout=timeout)
        except RuntimeError:
            self.process.kill()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()

    def token(self, principal: Principal = OPERATOR) -> str:
        assert self.signer is not None  # noqa: S101 - env() ran
        return self.signer.issue(principal)

    def stub(self) -> tuple[grpc.aio.Channel, ingest_pb2_grpc.ProductRegistryServiceStub]:
        chan = channel(f"127.0.0.1:{self.ports['grpc']}", tls=True, tls_dir=str(self.tls_dir))
        return chan, ingest_pb2_grpc.ProductRegistryServiceStub(chan)

    def sftp_connect(
        self, user: str, *, password: str | None = None, key: asyncssh.SSHKey | None = None
    ) -> Any:
        """An asyncssh connection to the SFTP server with a password or a key (await it,
        or ``async with`` it); the host key is not checked."""
        return asyncssh.connect(
            "127.0.0.1",
            self.ports["sftp"],
            username=user,
            password=password,
            client_keys=[key] if key else None,
            known_hosts=None,
        )

    async def sftp_put(
        self,
        user: str,
        name: str,
        data: bytes,
        *,
        password: str | None = None,
        key: asyncssh.SSHKey | None = None,
        block_size: int = 16 * 1024,
    ) -> float:
        """Upload ``data`` as ``name``; the seconds from opening the file until its close
        succeeded (every record acknowledged by Kafka). SFTPError when refused."""
        async with (
            self.sftp_connect(user, password=password, key=key) as conn,
            conn.start_sftp_client() as sftp,
        ):
            started = time.perf_counter()
            async with sftp.open(name, "wb", block_size=block_size) as fh:
                await fh.write(data)
            return time.perf_counter() - started

    def syslog_context(
        self, credentials: ingest_pb2.ServerCredentials, directory: Path
    ) -> ssl.SSLContext:
        """A syslog-over-TLS client context with the certificate, key and CA handed out at
        registration (written to ``directory``)."""
        cert, key = directory / "client.pem", directory / "client.key"
        cert.write_bytes(credentials.client_certificate_pem)
        key.write_bytes(credentials.client_private_key_pem)
        ca = directory / "ca-from-registration.pem"
        ca.write_bytes(credentials.ca_certificate_pem)
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        return context

    async def syslog_connect(
        self, context: ssl.SSLContext
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1", self.ports["syslog"], ssl=context, server_hostname="localhost"
        )

    async def publish_account(
        self,
        account_id: str,
        email: str,
        *,
        valid_days: float = 30,
        deleted: bool = False,
        version: int = 1,
    ) -> None:
        snap = accounts_pb2.AccountSnapshot(
            account_id=account_id,
            name=account_id,
            managed_by_email=email,
            deleted=deleted,
            version=version,
        )
        snap.valid_until.CopyFrom(to_timestamp(datetime.now(UTC) + timedelta(days=valid_days)))
        async with EventProducer(
            self.kafka_bootstrap, service="auth", topic_prefix=self.prefix
        ) as producer:
            await producer.publish(topics.ACCOUNTS, snap, key=account_id, account_id=account_id)

    async def register(
        self,
        account_id: str,
        email: str,
        *,
        kind: int = products_pb2.PRODUCT_KIND_THREAT_DISCOVERY_APPLIANCE,
        timeout: float = 30.0,
        **fields: Any,
    ) -> ingest_pb2.RegisterProductResponse:
        """Register a product, waiting for the account projection to know the account (and
        retrying while the bus is unavailable: the request id makes a retry safe)."""
        request = ingest_pb2.RegisterProductRequest(
            request_id=fields.pop("request_id", uuid.uuid4().hex),
            account_id=account_id,
            kind=kind,  # type: ignore[arg-type]
            name=fields.pop("name", "appliance"),
            protocol=fields.pop("protocol", products_pb2.UPLOAD_PROTOCOL_SSH),
            upload_frequency_seconds=fields.pop("upload_frequency_seconds", 300),
            registration_email=email,
            **fields,
        )
        chan, stub = self.stub()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    # grpc's generated stubs are typed for the sync API.
                    response: ingest_pb2.RegisterProductResponse = await stub.RegisterProduct(  # type: ignore[misc]
                        request, metadata=bearer(self.token()), timeout=10
                    )
                    return response
                except grpc.aio.AioRpcError as exc:
                    unknown = "account unknown" in (exc.details() or "")
                    unavailable = exc.code() is grpc.StatusCode.UNAVAILABLE
                    if not (unknown or unavailable) or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.3)
        finally:
            await chan.close()


def scrape(gw: Gateway) -> dict[str, float]:
    """The gateway's Prometheus samples, ``name{labels}`` -> value."""
    url = f"http://127.0.0.1:{gw.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - fixed local URL
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def tool(name: str) -> str:
    """The path of a client tool the integration tests drive; RuntimeError naming it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install openssh-client sshpass curl)")
    return path


def curl(gw: Gateway, *args: str, port: str = "https") -> tuple[int, dict[str, str], str]:
    """Run curl against the gateway; (status, headers, body)."""
    proc = subprocess.run(  # noqa: S603
        [
            tool("curl"),
            "-sS",
            "--cacert",
            str(gw.ca),
            "-D",
            "-",
            *args[:-1],
            f"https://127.0.0.1:{gw.ports[port]}{args[-1]}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    head, _, body = proc.stdout.decode().partition("\r\n\r\n")
    while body.startswith("HTTP/"):  # a proxy's "200 Connection established" came first
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


def openssh_sftp(
    gw: Gateway, user: str, password: str, commands: str, tmp_path: Path, *, strict: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH sftp in batch mode with a password (sshpass -e keeps it off argv);
    ``strict`` refuses a host key that is not already in known_hosts."""
    batch = tmp_path / "batch.txt"
    batch.write_text(commands)
    return subprocess.run(  # noqa: S603
        [
            tool("sshpass"),
            "-e",
            tool("sftp"),
            # Before -b, so it wins over the BatchMode=yes that -b adds (password prompt).
            "-oBatchMode=no",
            f"-oStrictHostKeyChecking={'yes' if strict else 'no'}",
            f"-oUserKnownHostsFile={tmp_path / 'known_hosts'}",
            "-oPreferredAuthentications=password",
            "-oPubkeyAuthentication=no",
            "-oNumberOfPasswordPrompts=1",
            "-P",
            str(gw.ports["sftp"]),
            "-b",
            str(batch),
            f"{user}@127.0.0.1",
        ],
        env={**os.environ, "SSHPASS": password},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


class PrivateKafka:
    """A throwaway single-node KRaft broker (for tests that stop and restart Kafka without
    touching the shared broker). Uses the jars ``deploy/local/infra.py`` installed."""

    def __init__(self, workdir: Path, repo_root: Path) -> None:
        self.dir = workdir
        self.libs = repo_root / ".local" / "kafka" / "libs"
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: Any = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main_class: str, *args: str) -> list[str]:
        import shutil

        java = shutil.which("java")
        if java is None or not self.libs.is_dir():
            raise RuntimeError(f"need java and Kafka jars in {self.libs} (infra.py install)")
        log4j = self.dir / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=WARN, stderr\n"
            "log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n"
        )
        return [java, "-Xms128m", "-Xmx384m", f"-Dlog4j.configuration=file:{log4j}",
                "-cp", f"{self.libs}/*", main_class, *args]  # fmt: skip

    def format(self) -> None:
        import base64
        import subprocess

        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(
            f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={self.dir / "data"}
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
"""
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cluster = "A" + cluster[1:] if cluster.startswith("-") else cluster
        subprocess.run(  # noqa: S603
            self._java("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props)),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = 90.0) -> None:
        import socket
        import subprocess

        log = (self.dir / "broker.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            self._java("kafka.Kafka", str(self.dir / "server.properties")),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private Kafka exited: see {self.dir / 'broker.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("private Kafka did not open its port")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a client can fetch cluster metadata (the broker has registered)."""
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                await asyncio.wait_for(admin.start(), 5)
                await admin.list_topics()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            finally:
                await admin.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001 - then the hard way
                self.proc.kill()
                self.proc.wait(30)

#!/usr/bin/env python3
"""Local infrastructure for TMSP development: Kafka (KRaft) and FerretDB, without Docker.

Standalone, standard library only (it runs before any virtualenv exists). Needs ``java`` (17+)
and, the first time only, ``mvn`` (fetches Kafka from Maven Central) and ``go`` (builds FerretDB
and buf from pinned Go modules).

Usage::

    python3 deploy/local/infra.py up             # fetch if needed, start, wait until ready
    python3 deploy/local/infra.py status         # what is running where
    python3 deploy/local/infra.py down [--purge] # stop (and with --purge: delete the data)
    python3 deploy/local/infra.py kafka-cli topics --list
    python3 deploy/local/infra.py install        # fetch/build only (Kafka libs + FerretDB)
    python3 deploy/local/infra.py install-buf    # build .local/bin/buf

Contracts:

* Everything lives under ``<repo>/.local/`` (the repo root is two levels above this file).
* ``up`` is idempotent: components whose pid file points at a live process are not started
  again; each component is waited for until it answers its protocol (Kafka: a Metadata request
  lists a live broker; FerretDB: a MongoDB ``ping`` returns ``ok: 1``).
* ``up`` writes progress to stderr and exactly two ``KEY=VALUE`` lines to stdout::

      TMSP_KAFKA_BOOTSTRAP=127.0.0.1:19092
      TMSP_MONGO_URL=mongodb://127.0.0.1:37017/

  so ``eval "$(python3 deploy/local/infra.py up)"`` exports them.
* ``down`` is idempotent: SIGTERM, up to 20 s grace, then SIGKILL; pid files are removed.
* Exit status: 0 on success, 1 on any error (one ``infra: error: ...`` line on stderr).

Environment:

* ``TMSP_LOCAL_KAFKA_PORT`` (19092), ``TMSP_LOCAL_KAFKA_CONTROLLER_PORT`` (19093),
  ``TMSP_LOCAL_MONGO_PORT`` (37017): local ports, all bound to 127.0.0.1.
* ``TMSP_LOCAL_FERRETDB_DEBUG_PORT``: if set, FerretDB's debug/metrics HTTP listener is
  enabled on 127.0.0.1:<port>; by default it is disabled.
* ``TMSP_KAFKA_BOOTSTRAP``: use this external Kafka; the local one is not started.
* ``TMSP_MONGO_URL``: use this external MongoDB(-compatible) server; FerretDB is not started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_DIR.parent.parent
LOCAL = REPO_ROOT / ".local"

BIN_DIR = LOCAL / "bin"
RUN_DIR = LOCAL / "run"
LOG_DIR = LOCAL / "logs"
BUILD_DIR = LOCAL / "build"

KAFKA_HOME = LOCAL / "kafka"
KAFKA_LIBS = KAFKA_HOME / "libs"
KAFKA_DATA = KAFKA_HOME / "data"
KAFKA_LOGS = KAFKA_HOME / "logs"
KAFKA_CONFIG = KAFKA_HOME / "server.properties"
KAFKA_LOG4J = KAFKA_HOME / "log4j.properties"
KAFKA_TOOLS_LOG4J = KAFKA_HOME / "tools-log4j.properties"
KAFKA_CLUSTER_ID = KAFKA_HOME / "cluster.id"
#: Class data sharing archive of the broker JVM: halves its start time (written at first stop).
KAFKA_CDS_ARCHIVE = KAFKA_HOME / "broker.jsa"

FERRETDB_HOME = LOCAL / "ferretdb"
FERRETDB_DATA = FERRETDB_HOME / "data"
FERRETDB_STATE = FERRETDB_HOME / "state"
FERRETDB_BIN = BIN_DIR / "ferretdb"
BUF_BIN = BIN_DIR / "buf"

POM = DEPLOY_DIR / "pom.xml"
FERRETDB_TOOLS_MODULE = DEPLOY_DIR / "ferretdb"
BUF_TOOLS_MODULE = DEPLOY_DIR / "buf"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
BUF_MODULE = "github.com/bufbuild/buf"

HOST = "127.0.0.1"
DEFAULT_TIMEOUT_S = 90.0
#: An already-running component gets this long to answer (it started in an earlier ``up``).
ALREADY_RUNNING_TIMEOUT_S = 20.0
STOP_GRACE_S = 20.0

KAFKA_BROKER_CLASS = "kafka.Kafka"
KAFKA_BROKER_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
KAFKA_TOOL_JVM_OPTS = ("-Xmx512m", "-Djava.awt.headless=true")

#: ``kafka-cli`` tool name -> main class (all verified present in Kafka 3.9.1).
KAFKA_TOOLS: dict[str, str] = {
    "topics": "org.apache.kafka.tools.TopicCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "console-producer": "kafka.tools.ConsoleProducer",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "configs": "kafka.admin.ConfigCommand",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "dump-log": "kafka.tools.DumpLogSegments",
    "storage": "kafka.tools.StorageTool",
}
#: Tools that get ``--bootstrap-server <effective bootstrap>`` added when not given.
KAFKA_TOOLS_WITH_BOOTSTRAP = frozenset(
    {
        "topics",
        "console-consumer",
        "console-producer",
        "consumer-perf-test",
        "consumer-groups",
        "configs",
        "get-offsets",
        "metadata-quorum",
    }
)


class InfraError(Exception):
    """A failure to report as one ``infra: error: ...`` line (plus optional details)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def progress(message: str) -> None:
    """Print a progress line to stderr (stdout is reserved for machine-readable output)."""
    print(f"infra: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Effective configuration, read once from the environment."""

    kafka_port: int
    kafka_controller_port: int
    mongo_port: int
    ferretdb_debug_port: int | None
    external_kafka: str | None
    external_mongo: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``env``; raises InfraError on a malformed port."""

        def optional_port(name: str) -> int | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise InfraError(f"{name}={raw!r} is not a TCP port number")
            return int(raw)

        def port(name: str, default: int) -> int:
            value = optional_port(name)
            return default if value is None else value

        return cls(
            kafka_port=port("TMSP_LOCAL_KAFKA_PORT", 19092),
            kafka_controller_port=port("TMSP_LOCAL_KAFKA_CONTROLLER_PORT", 19093),
            mongo_port=port("TMSP_LOCAL_MONGO_PORT", 37017),
            ferretdb_debug_port=optional_port("TMSP_LOCAL_FERRETDB_DEBUG_PORT"),
            external_kafka=env.get("TMSP_KAFKA_BOOTSTRAP", "").strip() or None,
            external_mongo=env.get("TMSP_MONGO_URL", "").strip() or None,
        )

    @property
    def kafka_bootstrap(self) -> str:
        """The bootstrap servers clients should use (external one if configured)."""
        return self.external_kafka or f"{HOST}:{self.kafka_port}"

    @property
    def mongo_url(self) -> str:
        """The MongoDB URL clients should use (external one if configured)."""
        return self.external_mongo or f"mongodb://{HOST}:{self.mongo_port}/"


# --------------------------------------------------------------------------------------------
# Small helpers: versions, tools on PATH, subprocesses, locking
# --------------------------------------------------------------------------------------------


def kafka_version() -> str:
    """The Kafka version pinned in pom.xml (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", POM.read_text())
    if not match:
        raise InfraError(f"no <kafka.version> in {POM}")
    return match.group(1)


def go_module_version(tools_module: Path, module: str) -> str:
    """The version (``vX.Y.Z``) of ``module`` required by the go.mod in ``tools_module``."""
    text = (tools_module / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise InfraError(f"{module} is not required in {tools_module / 'go.mod'}")
    return match.group(1)


def which(program: str, why: str) -> str:
    """Absolute path of ``program`` on PATH; raises InfraError saying ``why`` it is needed."""
    path = shutil.which(program)
    if path is None:
        raise InfraError(f"'{program}' not found on PATH (needed {why})")
    return path


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
) -> str:
    """Run a command to completion; its stdout goes to our stderr unless ``capture``.

    Returns captured stdout ("" when not capturing). Raises InfraError on a non-zero exit,
    with the command's output (when captured) as details.
    """
    result = subprocess.run(  # noqa: S603 - argv is built by this script, never from input
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else sys.stderr.fileno(),
        stderr=subprocess.STDOUT if capture else None,
        check=False,
    )
    output = result.stdout.decode(errors="replace") if capture else ""
    if result.returncode != 0:
        raise InfraError(
            f"command failed (exit {result.returncode}): {' '.join(argv)}", details=output
        )
    return output


def go_env() -> dict[str, str]:
    """Environment for reproducible ``go`` builds of the pinned tools modules."""
    env = dict(os.environ)
    env["GOWORK"] = "off"  # ignore any go.work above us
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false"  # the repo's git state is irrelevant
    return env


@contextlib.contextmanager
def exclusive_lock() -> Iterator[None]:
    """Serialise ``up``/``down``/``install`` across concurrent invocations (e.g. make -j)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "infra.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another infra.py invocation to finish...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of ``path`` ("" if it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def make_writable(tree: Path) -> None:
    """Add owner write permission to everything under ``tree`` (Go's module cache is 0444)."""
    for root, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            path = Path(root, name)
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    tree.chmod(tree.stat().st_mode | stat.S_IWUSR)


def remove_tree(tree: Path) -> None:
    """``rm -rf tree``, coping with read-only files copied from the Go module cache."""
    if tree.exists():
        make_writable(tree)
        shutil.rmtree(tree)


# --------------------------------------------------------------------------------------------
# Installing: Kafka (Maven Central), FerretDB and buf (pinned Go modules)
# --------------------------------------------------------------------------------------------


def ensure_kafka_libs() -> Path:
    """Make sure ``.local/kafka/libs`` holds the pinned Kafka's jars; return the directory.

    Fetches with Maven into a staging directory renamed into place on success, so an
    interrupted download never looks complete.
    """
    version = kafka_version()
    if (KAFKA_LIBS / f"kafka_2.13-{version}.jar").is_file():
        return KAFKA_LIBS
    mvn = which("mvn", f"once, to fetch Kafka {version} from Maven Central")
    progress(f"fetching Kafka {version} from Maven Central (first time ~1 min)...")
    staging = KAFKA_HOME / "libs.partial"
    remove_tree(staging)
    KAFKA_HOME.mkdir(parents=True, exist_ok=True)
    run(
        [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
        ],
        capture=True,  # shown only on failure (-q still prints stray ANSI codes)
    )  # fmt: skip
    if not (staging / f"kafka_2.13-{version}.jar").is_file():
        raise InfraError(f"Maven finished but kafka_2.13-{version}.jar is missing in {staging}")
    remove_tree(KAFKA_LIBS)  # libs of another Kafka version
    KAFKA_CDS_ARCHIVE.unlink(missing_ok=True)  # made from the old jars
    staging.rename(KAFKA_LIBS)
    return KAFKA_LIBS


def installed_version(binary: Path, pattern: str) -> str | None:
    """Run ``binary --version`` and return the first group of ``pattern``, or None."""
    if not binary.is_file():
        return None
    try:
        output = run([str(binary), "--version"], capture=True)
    except (InfraError, OSError):
        return None
    match = re.search(pattern, output, re.MULTILINE)
    return match.group(1) if match else None


def ensure_ferretdb() -> Path:
    """Make sure ``.local/bin/ferretdb`` is the pinned FerretDB; return its path.

    ``go install github.com/FerretDB/FerretDB/cmd/ferretdb`` from the tools module builds a
    binary that panics at start ("Invalid build/version/version.txt"): FerretDB embeds
    ``build/version/version.txt``, which is not part of the released module. So: download the
    pinned module (checked against deploy/local/ferretdb/go.sum), copy its source under
    ``.local/build``, write ``version.txt`` and build ``./cmd/ferretdb`` there.
    """
    version = go_module_version(FERRETDB_TOOLS_MODULE, FERRETDB_MODULE)
    if installed_version(FERRETDB_BIN, r"^version:\s*(\S+)") == version:
        return FERRETDB_BIN
    go = which("go", f"once, to build FerretDB {version}")
    progress(f"building FerretDB {version.lstrip('v')} (first time ~2 min)...")
    env = go_env()
    info = json.loads(
        run(
            [go, "mod", "download", "-json", FERRETDB_MODULE],
            cwd=FERRETDB_TOOLS_MODULE,
            env=env,
            capture=True,
        )
    )
    source = BUILD_DIR / f"ferretdb-{version}"
    remove_tree(source)
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(info["Dir"], source)
    make_writable(source)
    (source / "build" / "version" / "version.txt").write_text(f"{version}\n")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    partial = FERRETDB_BIN.with_name("ferretdb.partial")
    run([go, "build", "-o", str(partial), "./cmd/ferretdb"], cwd=source, env=env)
    partial.replace(FERRETDB_BIN)
    remove_tree(source)
    with contextlib.suppress(OSError):
        BUILD_DIR.rmdir()  # only if empty
    return FERRETDB_BIN


def ensure_buf() -> Path:
    """Make sure ``.local/bin/buf`` is the buf version pinned in deploy/local/buf; return it."""
    version = go_module_version(BUF_TOOLS_MODULE, BUF_MODULE)
    if installed_version(BUF_BIN, r"^(\S+)$") == version.lstrip("v"):
        return BUF_BIN
    go = which("go", f"once, to build buf {version}")
    progress(f"building buf {version.lstrip('v')} (first time ~2 min)...")
    env = go_env() | {"GOBIN": str(BIN_DIR)}
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    run([go, "install", f"{BUF_MODULE}/cmd/buf"], cwd=BUF_TOOLS_MODULE, env=env)
    return BUF_BIN


# --------------------------------------------------------------------------------------------
# Processes: pid files, liveness, detached start, stop
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Component:
    """A background process managed through a pid file under ``.local/run``."""

    name: str
    #: A string that must occur in /proc/<pid>/cmdline (guards against a recycled pid).
    marker: str
    #: Logs worth showing when the component fails, most useful first.
    logs: tuple[Path, ...]

    @property
    def pid_file(self) -> Path:
        return RUN_DIR / f"{self.name}.pid"

    @property
    def console_log(self) -> Path:
        """Where the process's stdout and stderr go."""
        return LOG_DIR / f"{self.name}.log"


KAFKA = Component(
    "kafka", marker=str(KAFKA_CONFIG), logs=(LOG_DIR / "kafka.log", KAFKA_LOGS / "server.log")
)
FERRETDB = Component("ferretdb", marker=str(FERRETDB_BIN), logs=(LOG_DIR / "ferretdb.log",))
COMPONENTS = (KAFKA, FERRETDB)


def process_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process whose command line contains ``marker``.

    Without /proc (not Linux) only existence is checked.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours
    proc = Path("/proc", str(pid))
    if not proc.exists():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False  # exited meanwhile
    return state != "Z" and marker in cmdline


def running_pid(component: Component) -> int | None:
    """The pid of the live process recorded for ``component``; drops a stale pid file."""
    try:
        pid = int(component.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        component.pid_file.unlink(missing_ok=True)
        return None
    if process_alive(pid, component.marker):
        return pid
    component.pid_file.unlink(missing_ok=True)
    return None


def start_detached(component: Component, argv: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (survives this script), logging to the console log.

    The console log is truncated, so it only holds this run. Writes the pid file.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(component.console_log, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by this script
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    component.pid_file.write_text(f"{proc.pid}\n")
    return proc


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (our components lead their own)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def wait_exit(pid: int, marker: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to die; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        if not process_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not process_alive(pid, marker)


def stop(component: Component) -> bool:
    """Stop ``component`` (SIGTERM, grace period, SIGKILL); False if it was not running."""
    pid = running_pid(component)
    if pid is None:
        return False
    progress(f"stopping {component.name} (pid {pid})...")
    signal_group(pid, signal.SIGTERM)
    if not wait_exit(pid, component.marker, STOP_GRACE_S):
        progress(f"{component.name} ignored SIGTERM for {STOP_GRACE_S:.0f} s, sending SIGKILL")
        signal_group(pid, signal.SIGKILL)
        if not wait_exit(pid, component.marker, 5.0):
            raise InfraError(f"{component.name} (pid {pid}) survived SIGKILL")
    component.pid_file.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------
# Readiness probes (raw sockets, standard library only)
# --------------------------------------------------------------------------------------------


def port_open(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((HOST, port)) == 0


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes; raises ConnectionError if the peer closes first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)


def kafka_ready(port: int, timeout: float = 2.0) -> bool:
    """True if a Kafka broker on 127.0.0.1:``port`` lists at least one live broker.

    Sends a Metadata v1 request for no topics (api_key 3) and parses the broker array and the
    controller id of the response. A broker only lists itself once it is unfenced, i.e. ready
    to serve clients.
    """
    client_id = b"tmsp-infra"
    header = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id
    body = struct.pack(">i", 0)  # topics: empty array (v1: null would mean "all topics")
    request = header + body
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            response = recv_exact(sock, size)
    except (OSError, struct.error):
        return False
    try:
        offset = 4  # correlation id
        (broker_count,) = struct.unpack_from(">i", response, offset)
        offset += 4
        for _ in range(broker_count):
            offset += 4  # node id
            (host_len,) = struct.unpack_from(">h", response, offset)
            offset += 2 + host_len + 4  # host, port
            (rack_len,) = struct.unpack_from(">h", response, offset)
            offset += 2 + max(rack_len, 0)
        (controller_id,) = struct.unpack_from(">i", response, offset)
    except struct.error:
        return False
    return bool(broker_count > 0 and controller_id >= 0)


#: Fixed sizes of the BSON element types a ``ping`` reply may contain (see bsonspec.org).
_BSON_FIXED_SIZES = {
    0x01: 8,  # double
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
}


def bson_ok(document: bytes) -> bool:
    """True if the top-level field ``ok`` of a BSON ``document`` equals 1.

    Handles the element types a server reply to ``ping`` contains; anything else ends the
    scan (and the answer is False unless ``ok`` was already seen).
    """
    offset = 4  # total length
    while offset < len(document) - 1:
        kind = document[offset]
        name_end = document.index(b"\0", offset + 1)
        name = document[offset + 1 : name_end]
        offset = name_end + 1
        if name == b"ok":
            if kind == 0x01:
                return bool(struct.unpack_from("<d", document, offset)[0] == 1.0)
            if kind == 0x10:
                return bool(struct.unpack_from("<i", document, offset)[0] == 1)
            if kind == 0x12:
                return bool(struct.unpack_from("<q", document, offset)[0] == 1)
            return kind == 0x08 and document[offset] == 1
        if kind in _BSON_FIXED_SIZES:
            offset += _BSON_FIXED_SIZES[kind]
        elif kind == 0x02:  # string: int32 length (incl. NUL) + bytes
            offset += 4 + struct.unpack_from("<i", document, offset)[0]
        elif kind in (0x03, 0x04):  # document / array: int32 total length
            offset += struct.unpack_from("<i", document, offset)[0]
        elif kind == 0x05:  # binary: int32 length + subtype byte + bytes
            offset += 5 + struct.unpack_from("<i", document, offset)[0]
        else:
            return False
    return False


def mongo_ready(port: int, timeout: float = 2.0) -> bool:
    """True if a MongoDB-wire server on 127.0.0.1:``port`` answers ``{ping: 1}`` with ok: 1.

    Sends one OP_MSG (opcode 2013) with a single body section holding
    ``{ping: 1, $db: "admin"}`` and checks the reply document.
    """
    elements = (
        b"\x10ping\x00" + struct.pack("<i", 1)  # int32 ping: 1
        + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"  # string $db: "admin"
    )  # fmt: skip
    document = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"
    message = struct.pack("<I", 0) + b"\x00" + document  # flagBits, section kind 0, body
    header = struct.pack("<iiii", 16 + len(message), 1, 0, 2013)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(header + message)
            (length, _request_id, _response_to, opcode) = struct.unpack(
                "<iiii", recv_exact(sock, 16)
            )
            reply = recv_exact(sock, length - 16)
    except (OSError, struct.error):
        return False
    if opcode != 2013 or len(reply) < 5 or reply[4] != 0:
        return False
    try:
        return bson_ok(reply[5:])
    except (ValueError, struct.error):
        return False


def wait_ready(
    component: Component,
    probe: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    where: str,
) -> None:
    """Poll ``probe`` until it succeeds; raise InfraError (with log tails) on timeout or exit.

    ``proc`` is the process started by this invocation (None if it was already running), used
    to notice an early exit instead of waiting for the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        exit_code = proc.poll() if proc is not None else None
        if exit_code is not None:
            component.pid_file.unlink(missing_ok=True)
            reason = f"{component.name} exited with code {exit_code} during startup"
            break
        if time.monotonic() >= deadline:
            reason = f"{component.name} not ready on {where} after {timeout:.0f} s"
            if component is KAFKA:
                reason += kafka_backlog_hint()
            break
        time.sleep(0.25)
    details = []
    for log in component.logs:
        text = tail(log)
        if text:
            details.append(f"--- last lines of {log} ---\n{text}")
    raise InfraError(reason, details="\n".join(details))


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


#: Past this many partition directories, a slow start is most likely the broker loading them.
MANY_PARTITIONS = 2000


def kafka_backlog_hint() -> str:
    """Why a local broker may be slow to start: many partitions left in its data directory
    (each is opened at start-up), with what to do about it; empty when there are few."""
    try:
        partitions = sum(1 for entry in KAFKA_DATA.iterdir() if entry.is_dir())
    except OSError:
        return ""
    if partitions < MANY_PARTITIONS:
        return ""
    return (
        f" ({KAFKA_DATA} holds {partitions} partitions, which the broker loads before it is"
        " ready: wait longer with `up --timeout 600`, or start empty with `down --purge`)"
    )


def java_command(main_class: str, jvm_opts: Sequence[str], log4j: Path) -> list[str]:
    """``java`` command line running ``main_class`` from the Kafka libs."""
    java = which("java", "to run Kafka (Java 17+)")
    return [
        java,
        *jvm_opts,
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{KAFKA_LIBS}/*",  # expanded by java itself
        main_class,
    ]


def write_kafka_config(settings: Settings) -> None:
    """(Re)write server.properties and the log4j configurations from ``settings``."""
    KAFKA_HOME.mkdir(parents=True, exist_ok=True)
    port, cport = settings.kafka_port, settings.kafka_controller_port
    KAFKA_CONFIG.write_text(
        f"""\
# Generated by deploy/local/infra.py on every start; edits are overwritten.
# Single node, KRaft combined mode (broker + controller in one process).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{cport}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
advertised.listeners=PLAINTEXT://{HOST}:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={KAFKA_DATA}

# Topics are created explicitly by the services' topic registry.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics on a single node: replication factor 1, few partitions (fast first use).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Consumer groups start consuming at once (no 3 s wait for more members).
group.initial.rebalance.delay.ms=0
"""
    )
    KAFKA_LOG4J.write_text(
        """\
# Broker logging: INFO and above to kafka/logs/server.log, WARN and above to the console log.
log4j.rootLogger=INFO, file, stdout
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Threshold=WARN
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
"""
    )
    write_kafka_tools_log4j()


def write_kafka_tools_log4j() -> None:
    """Write the log4j configuration for command line tools (WARN and above, to stderr)."""
    KAFKA_HOME.mkdir(parents=True, exist_ok=True)
    KAFKA_TOOLS_LOG4J.write_text(
        """\
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""
    )


def kafka_cluster_id() -> str:
    """The stored cluster id, created on first use (Kafka's base64url-encoded UUID form)."""
    if KAFKA_CLUSTER_ID.is_file():
        return KAFKA_CLUSTER_ID.read_text().strip()
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # would look like a command line option
            break
    KAFKA_HOME.mkdir(parents=True, exist_ok=True)
    KAFKA_CLUSTER_ID.write_text(f"{cluster_id}\n")
    return cluster_id


def format_kafka_storage() -> None:
    """Format the KRaft log directory once (skipped when meta.properties exists)."""
    if (KAFKA_DATA / "meta.properties").is_file():
        return
    progress("formatting Kafka KRaft storage...")
    KAFKA_DATA.mkdir(parents=True, exist_ok=True)
    command = java_command(KAFKA_TOOLS["storage"], KAFKA_TOOL_JVM_OPTS, KAFKA_TOOLS_LOG4J)
    run(
        [*command, "format", "--ignore-formatted", "-t", kafka_cluster_id(),
         "-c", str(KAFKA_CONFIG)],
        capture=True,
    )  # fmt: skip


def kafka_cds_option() -> str:
    """JVM option using the broker's class data sharing archive, or creating it if absent.

    The JVM writes the archive when the broker exits cleanly (``down``); an unusable archive
    (other JDK, other jars) is ignored by the JVM with a warning in the console log.
    """
    if KAFKA_CDS_ARCHIVE.is_file():
        return f"-XX:SharedArchiveFile={KAFKA_CDS_ARCHIVE}"
    return f"-XX:ArchiveClassesAtExit={KAFKA_CDS_ARCHIVE}"


def start_kafka(settings: Settings) -> subprocess.Popen[bytes]:
    """Write the configuration, format storage if needed and start the broker detached."""
    write_kafka_config(settings)
    format_kafka_storage()
    KAFKA_LOGS.mkdir(parents=True, exist_ok=True)
    jvm_opts = (*KAFKA_BROKER_JVM_OPTS, kafka_cds_option(), f"-Dkafka.logs.dir={KAFKA_LOGS}")
    command = java_command(KAFKA_BROKER_CLASS, jvm_opts, KAFKA_LOG4J)
    progress(f"starting Kafka {kafka_version()} on {HOST}:{settings.kafka_port}...")
    return start_detached(KAFKA, [*command, str(KAFKA_CONFIG)], cwd=KAFKA_HOME)


# --------------------------------------------------------------------------------------------
# FerretDB
# --------------------------------------------------------------------------------------------


def start_ferretdb(settings: Settings) -> subprocess.Popen[bytes]:
    """Start FerretDB (SQLite backend, data in .local/ferretdb/data) detached."""
    FERRETDB_DATA.mkdir(parents=True, exist_ok=True)
    FERRETDB_STATE.mkdir(parents=True, exist_ok=True)
    debug = settings.ferretdb_debug_port
    argv = [
        str(FERRETDB_BIN),
        "--handler=sqlite",
        f"--sqlite-url=file:{FERRETDB_DATA}/",
        f"--listen-addr={HOST}:{settings.mongo_port}",
        f"--state-dir={FERRETDB_STATE}",
        f"--debug-addr={HOST}:{debug}" if debug else "--debug-addr=-",  # "-" disables it
        "--telemetry=disable",
        "--log-level=warn",
    ]
    progress(f"starting FerretDB on {HOST}:{settings.mongo_port}...")
    return start_detached(FERRETDB, argv, cwd=FERRETDB_HOME)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LocalService:
    """How ``up`` and ``status`` handle one locally run component."""

    component: Component
    #: Ports it binds; all must be free before it is started.
    ports: tuple[int, ...]
    #: What to tell the user when one of ``ports`` is taken.
    port_hint: str
    install: Callable[[], Path]
    start: Callable[[Settings], subprocess.Popen[bytes]]
    #: True once the component serves clients.
    probe: Callable[[], bool]
    #: host:port clients connect to.
    where: str


def local_services(settings: Settings) -> list[LocalService]:
    """The components to run locally: those without an external replacement in ``settings``."""
    services = []
    if not settings.external_kafka:
        kport = settings.kafka_port
        services.append(
            LocalService(
                component=KAFKA,
                ports=(kport, settings.kafka_controller_port),
                port_hint="set TMSP_LOCAL_KAFKA_PORT / TMSP_LOCAL_KAFKA_CONTROLLER_PORT, "
                "or TMSP_KAFKA_BOOTSTRAP to use that Kafka",
                install=ensure_kafka_libs,
                start=start_kafka,
                probe=lambda: kafka_ready(kport),
                where=f"{HOST}:{kport}",
            )
        )
    if not settings.external_mongo:
        mport = settings.mongo_port
        services.append(
            LocalService(
                component=FERRETDB,
                ports=(mport,),
                port_hint="set TMSP_LOCAL_MONGO_PORT, or TMSP_MONGO_URL to use that server",
                install=ensure_ferretdb,
                start=start_ferretdb,
                probe=lambda: mongo_ready(mport),
                where=f"{HOST}:{mport}",
            )
        )
    return services


def cmd_up(settings: Settings, timeout: float) -> None:
    """Fetch what is missing, start what is not running, wait until everything answers.

    Nothing is started unless every port needed is free. A component started by this call
    that does not become ready is stopped again before the error is raised.
    """
    if settings.external_kafka:
        progress(f"kafka: external ({settings.external_kafka}), not started")
    if settings.external_mongo:
        progress(f"ferretdb: external ({settings.external_mongo}), not started")
    with exclusive_lock():
        services = local_services(settings)
        for service in services:
            service.install()
        pids = {service.component.name: running_pid(service.component) for service in services}
        for service in services:
            if pids[service.component.name] is None:
                for port in service.ports:
                    if port_open(port):
                        raise InfraError(
                            f"port {port} is already in use by another process "
                            f"(needed by {service.component.name}); {service.port_hint}"
                        )
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for service in services:
            pid = pids[service.component.name]
            if pid is None:
                procs[service.component.name] = service.start(settings)
            else:
                progress(f"{service.component.name}: already running (pid {pid})")
        started = time.monotonic()
        for service in services:
            proc = procs.get(service.component.name)
            budget = timeout if proc else min(timeout, ALREADY_RUNNING_TIMEOUT_S)
            remaining = max(budget - (time.monotonic() - started), 1.0)
            try:
                wait_ready(service.component, service.probe, proc, remaining, service.where)
            except InfraError as error:
                if proc is not None:
                    stop(service.component)  # do not leave a half-started process behind
                else:
                    error.details += (
                        "\n(it was started earlier; if you changed its port, run "
                        "'infra.py down' first)"
                    )
                raise
            progress(f"{service.component.name}: ready on {service.where}")
    print(f"TMSP_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}")
    print(f"TMSP_MONGO_URL={settings.mongo_url}", flush=True)


def cmd_down(purge: bool) -> None:
    """Stop every component that has a live pid file; with ``purge`` delete their data."""
    with exclusive_lock():
        for component in COMPONENTS:
            if stop(component):
                progress(f"{component.name}: stopped")
            else:
                progress(f"{component.name}: not running")
        if purge:
            for path in (KAFKA_DATA, KAFKA_CLUSTER_ID, FERRETDB_DATA, FERRETDB_STATE):
                if path.is_dir():
                    remove_tree(path)
                else:
                    path.unlink(missing_ok=True)
            progress("purged Kafka and FerretDB data")


def cmd_status(settings: Settings) -> int:
    """Print one line per component; return 0 if every local component is up and ready."""
    healthy = True
    local = {service.component.name: service for service in local_services(settings)}
    externals = {KAFKA.name: settings.external_kafka, FERRETDB.name: settings.external_mongo}
    for component in COMPONENTS:
        pid = running_pid(component)
        service = local.get(component.name)
        if service is None:
            line = f"external  {externals[component.name]}"
            if pid:
                line += f" (a local one still runs: pid {pid})"
        elif pid is None:
            line = "stopped"
            healthy = False
        else:
            ready = service.probe()
            healthy = healthy and ready
            answer = "ready" if ready else "NOT answering"
            line = f"running   pid {pid}, {service.where}, {answer}"
        print(f"{component.name:<10}{line}")
    print(f"TMSP_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}")
    print(f"TMSP_MONGO_URL={settings.mongo_url}")
    return 0 if healthy else 1


def cmd_kafka_cli(settings: Settings, tool: str, args: Sequence[str]) -> NoReturn:
    """Replace this process with Kafka's ``tool`` (see KAFKA_TOOLS), passing ``args`` on.

    ``--bootstrap-server`` defaults to the effective bootstrap for the tools that take it.
    """
    if tool not in KAFKA_TOOLS:
        raise InfraError(f"unknown Kafka tool {tool!r}; known: {', '.join(sorted(KAFKA_TOOLS))}")
    with exclusive_lock():
        ensure_kafka_libs()
    write_kafka_tools_log4j()
    extra: list[str] = []
    given = {arg.split("=", 1)[0] for arg in args}
    if tool in KAFKA_TOOLS_WITH_BOOTSTRAP and not given & {
        "--bootstrap-server",
        "--bootstrap-controller",
        "--broker-list",
        "--help",
        "-h",
    }:
        extra = ["--bootstrap-server", settings.kafka_bootstrap]
    command = java_command(KAFKA_TOOLS[tool], KAFKA_TOOL_JVM_OPTS, KAFKA_TOOLS_LOG4J)
    argv = [*command, *extra, *args]  # first: metadata-quorum wants it before its subcommand
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - argv is built by this script


def cmd_install() -> None:
    """Fetch the Kafka libs and build FerretDB, without starting anything."""
    with exclusive_lock():
        progress(f"kafka libs: {ensure_kafka_libs()}")
        progress(f"ferretdb: {ensure_ferretdb()}")


def cmd_install_buf() -> None:
    """Build the pinned buf into .local/bin/buf."""
    with exclusive_lock():
        progress(f"buf: {ensure_buf()}")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line parser (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="infra.py",
        description="Local Kafka (KRaft) and FerretDB for TMSP development, without Docker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="fetch if needed, start, wait until ready (idempotent)")
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for readiness (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    down = sub.add_parser("down", help="stop everything (idempotent)")
    down.add_argument("--purge", action="store_true", help="also delete Kafka and FerretDB data")
    sub.add_parser("status", help="show what runs where; exit 1 unless all is up")
    cli = sub.add_parser(
        "kafka-cli",
        help="run a Kafka command line tool",
        description=f"Run a Kafka tool: {', '.join(sorted(KAFKA_TOOLS))}. Remaining arguments "
        "are passed on; --bootstrap-server defaults to the effective bootstrap.",
    )
    cli.add_argument("tool", choices=sorted(KAFKA_TOOLS), metavar="TOOL")
    cli.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the tool")
    sub.add_parser("install", help="fetch Kafka and build FerretDB only")
    sub.add_parser("install-buf", help="build .local/bin/buf")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command given by ``argv``; return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        if args.command == "up":
            cmd_up(settings, args.timeout)
        elif args.command == "down":
            cmd_down(args.purge)
        elif args.command == "status":
            return cmd_status(settings)
        elif args.command == "kafka-cli":
            cmd_kafka_cli(settings, args.tool, args.args)
        elif args.command == "install":
            cmd_install()
        elif args.command == "install-buf":
            cmd_install_buf()
    except InfraError as error:
        if error.details:
            print(error.details.rstrip(), file=sys.stderr)
        print(f"infra: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infra: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

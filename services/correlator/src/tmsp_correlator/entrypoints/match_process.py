"""Match processes: the match stage beside the worker, when ``MATCH_PROCESSES`` > 0.

The match stage (detections in, hits records out; see ``stages.py``) keeps no state, so
several processes can share its consumer group. In the worker's process it shares one
core of Python with the correlate and store stages, faust and aiokafka; in processes of its
own it has a core each, and the worker keeps the correlate and store stages.

Worker side, :class:`MatchProcesses` (a service of the faust app): starts the processes
(``python -m tmsp_correlator match --index i --ready-fd F``, the worker's own environment),
waits (bounded) until each says it consumes, restarts one that exits (after 1 s, doubling
up to 30 s while it keeps failing), and on stop sends SIGTERM and waits for them to finish
their batch, commit and close.

Process side, :func:`main`: the worker's settings from the environment; the last clean
version of each rule file from Mongo (as the worker's preflight reads them), rules
reloaded on the worker's interval; metrics on ``METRICS_PORT + index``. It stops on
SIGTERM or SIGINT, and by itself when its worker is gone (a kill -9 of the worker leaves no
orphan: the process's parent changes). A fatal consumer error or an unreachable Mongo at
start ends it with one line, and its worker starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import structlog
from mode import Service

from tmsp_common.kafka.topics import DETECTIONS
from tmsp_common.lifecycle import DependencyUnavailable
from tmsp_common.logging import configure_logging, get_logger
from tmsp_common.metrics import start_metrics_server
from tmsp_common.mongo import close, connect
from tmsp_common.settings import load_settings
from tmsp_correlator.adapters.mongo import MongoRuleFiles
from tmsp_correlator.bootstrap import (
    Fingerprint,
    load_rules_logged,
    reload_if_changed,
    rules_fingerprint,
)
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.rules import RuleSet
from tmsp_correlator.entrypoints.stages import (
    READY_TIMEOUT_S,
    match_and_send,
    match_group,
    stage_producer,
    stage_runner,
)

log = get_logger(__name__)

READY = b"ready\n"
"""What a match process writes on its ready pipe once it consumes."""
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RAN_WELL_S = 60.0
"""A process that ran this long before it exited is restarted after the first delay again."""
STOP_GRACE_S = 30.0


class MatchProcesses(Service):
    """Runs and watches the worker's match processes (see the module docstring)."""

    def __init__(self, settings: CorrelatorSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.count = settings.match_processes
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._keepers: list[asyncio.Task[None]] = []
        self._ready: list[asyncio.Event] = []
        self._quitting = False

    def pids(self) -> list[int]:
        """The running processes' ids."""
        return [p.pid for p in self._procs.values() if p.returncode is None]

    def spawn(self) -> None:
        """Start the processes (once): called as the worker starts, so that they load and
        join their group while the worker joins its own and recovers its table (faust
        starts this service only after that)."""
        if self._keepers:
            return
        self._ready = [asyncio.Event() for _ in range(self.count)]
        self._keepers = [
            asyncio.create_task(self._keep(index, self._ready[index - 1]))
            for index in range(1, self.count + 1)
        ]

    async def on_start(self) -> None:
        self.spawn()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self._ready)), 2 * READY_TIMEOUT_S
            )
        except TimeoutError:
            log.warning("match processes not all ready", processes=self.count)
        log.info("match processes running", processes=self.count, pids=self.pids())

    async def _keep(self, index: int, first_ready: asyncio.Event) -> None:
        """Run process ``index``, and again whenever it exits while the worker runs."""
        delay = RESTART_FIRST_S
        while not self._quitting:
            started = time.monotonic()
            try:
                proc = await self._spawn(index)
            except OSError as exc:
                code: int | str = f"not started: {exc}"
            else:
                first_ready.set()
                code = await proc.wait()
            first_ready.set()  # a process that cannot start does not hold up the worker
            if self._quitting:
                return
            if time.monotonic() - started >= RAN_WELL_S:
                delay = RESTART_FIRST_S
            log.error("match process exited", index=index, exit_code=code, restart_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_MAX_S)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        """Start process ``index`` and wait (bounded) until it consumes or exits."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tmsp_correlator",
                "match",
                "--index",
                str(index),
                "--ready-fd",
                str(write_fd),
                pass_fds=(write_fd,),
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._procs[index] = proc
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            said = await asyncio.wait_for(reader.readline(), 2 * READY_TIMEOUT_S)
        except TimeoutError:
            said = b""
        finally:
            transport.close()
        if said != READY and proc.returncode is None:
            log.warning("match process not ready yet", index=index, pid=proc.pid)
        return proc

    async def on_stop(self) -> None:
        self._quitting = True
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._keepers:
            task.cancel()


@dataclass
class MatchRules:
    """The rules of a match process, reloaded when the directory changes."""

    settings: CorrelatorSettings
    rules: RuleSet
    clean: dict[str, str]
    fingerprint: Fingerprint

    @classmethod
    def load(cls, settings: CorrelatorSettings, stored_clean: dict[str, str]) -> MatchRules:
        fingerprint = rules_fingerprint(settings.rules_dir)
        loaded = load_rules_logged(settings, stored_clean)
        return cls(settings, loaded.rules, loaded.clean, fingerprint)

    def reload_if_changed(self) -> None:
        changed = reload_if_changed(self.settings, self.fingerprint, self.clean)
        if changed is not None:
            loaded, self.fingerprint = changed
            self.rules, self.clean = loaded.rules, loaded.clean
            log.info("rules reloaded")


async def stored_clean_rule_files(settings: CorrelatorSettings) -> dict[str, str]:
    db = await connect(settings.mongo_url.get_secret_value(), settings.mongo_database)
    try:
        return await MongoRuleFiles(db).load()
    finally:
        await close(db)


async def serve(settings: CorrelatorSettings, rules: MatchRules, ready_fd: int) -> None:
    """Consume detections as the match group's member until stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = stage_producer(settings)
    await producer.start()
    try:
        runner = stage_runner(
            settings,
            group=match_group(settings),
            topic=DETECTIONS,
            handler=lambda events: match_and_send(rules.rules, producer, settings, events),
            dead_letters=producer,
            batch=(settings.match_batch_max, settings.match_batch_s),
        )
        helpers = [
            asyncio.create_task(_say_ready(runner.ready, ready_fd)),
            asyncio.create_task(_stop_when_orphaned(stop)),
        ]
        if settings.rules_reload_interval_s > 0:
            helpers.append(asyncio.create_task(_reload(rules, settings.rules_reload_interval_s)))
        try:
            await runner.run(stop)
        finally:
            for task in helpers:
                task.cancel()
    finally:
        await producer.stop()


async def _say_ready(ready: asyncio.Event, fd: int) -> None:
    try:
        await asyncio.wait_for(ready.wait(), READY_TIMEOUT_S)
        log.info("match process ready")
    except TimeoutError:  # more consumers than partitions leave some without
        log.warning("match process has no partition yet", waited_s=READY_TIMEOUT_S)
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.write(fd, READY)
            os.close(fd)


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("worker gone; match process stops", worker_pid=parent)
            stop.set()


async def _reload(rules: MatchRules, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            rules.reload_if_changed()
        except Exception:  # noqa: BLE001 - keep the running rules
            log.exception("rule reload failed; keeping the running rules")


def main(argv: list[str]) -> None:
    """``python -m tmsp_correlator match``: one match process (started by its worker)."""
    from tmsp_correlator.entrypoints.main import tune_gc  # the worker's GC settings

    parser = argparse.ArgumentParser(prog="python -m tmsp_correlator match")
    parser.add_argument("--index", type=int, default=1, help="1..MATCH_PROCESSES")
    parser.add_argument("--ready-fd", type=int, default=-1, help="pipe to write 'ready' to")
    args = parser.parse_args(argv)
    settings = load_settings(CorrelatorSettings)
    configure_logging(CorrelatorSettings.service_name, settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(match_process=args.index)
    where = f"tmsp-correlator match process {args.index}"
    try:
        clean = asyncio.run(stored_clean_rule_files(settings))
    except DependencyUnavailable as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port + args.index)
    rules = MatchRules.load(settings, clean)
    tune_gc()
    try:
        asyncio.run(serve(settings, rules, args.ready_fd))
    except Exception as exc:  # noqa: BLE001 - one clear line; the worker starts it again
        log.error("match stage stopped", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None

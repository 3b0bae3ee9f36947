"""Process lifecycle shared by every entry point.

Same order everywhere: logging, validated settings (exit 2 with one line on a bad one, or
on a port that cannot be listened on),
connect and ping dependencies (exit 3 with one line naming what is unreachable), build,
SIGTERM/SIGINT only *request* shutdown, serve, then drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tmsp_common.logging import configure_logging, get_logger
from tmsp_common.settings import ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)
LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
"""Errors binding a listening socket (port taken, address not here, privileged port)."""
log = get_logger(__name__)


class DependencyUnavailable(RuntimeError):
    """A dependency (Kafka, MongoDB, SMTP...) cannot be reached at start-up.

    The message is the whole story in one line, e.g. ``cannot reach Kafka at 127.0.0.1:9092
    (timed out after 10s)``; :func:`run_service` prints it and exits with 3.
    """


def install_shutdown_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; a second signal kills the process at once."""
    loop = asyncio.get_running_loop()

    def _request() -> None:
        if stop.is_set():
            sys.exit(130)
        log.info("shutdown requested")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request)


def run_service(settings_cls: type[S], main: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Run a service's ``main(settings, stop)`` with the shared start-up and exit behaviour."""
    settings = load_settings(settings_cls)
    configure_logging(settings_cls.service_name, settings.log_level, settings.log_format)

    async def _runner() -> None:
        stop = asyncio.Event()
        install_shutdown_handlers(stop)
        await main(settings, stop)

    try:
        asyncio.run(_runner())
    except DependencyUnavailable as exc:
        print(f"tmsp-{settings_cls.service_name}: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    except OSError as exc:
        if exc.errno not in LISTEN_ERRORS:
            raise
        # a port taken or not ours to bind: a setting to change, like a bad value
        print(f"tmsp-{settings_cls.service_name}: cannot listen: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    log.info("stopped")


async def every(
    interval_s: float, task: Callable[[], Awaitable[object]], stop: asyncio.Event, name: str
) -> None:
    """Run ``task`` now and then every ``interval_s`` until ``stop``; a failed run is logged
    and retried at the next interval (periodic jobs: schedules, purges, digests)."""
    while not stop.is_set():
        try:
            await task()
        except Exception as exc:  # noqa: BLE001 - a periodic task retries at its next run
            log.warning("periodic task failed", task=name, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def supervise(
    tasks: Sequence[asyncio.Task[object]],
    stop: asyncio.Event,
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Run ``tasks`` (consumers, periodic jobs) until ``stop`` is set or one of them fails;
    then set ``stop``, ``drain`` (e.g. the gRPC server), wait for every task and log the
    errors. Raises ``SystemExit(1)`` if a task ended the service by failing."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    stop.set()
    await drain()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "task ended with an error",
                task=task.get_name(),
                error=f"{type(result).__name__}: {result}",
            )
    if failed:
        raise SystemExit(1)

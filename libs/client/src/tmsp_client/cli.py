"""``tmsp``: the portal's command-line client (see docs/client.md).

Exit codes: 0 done; 1 the server refused or failed (one line ``tmsp: <RPC>: <STATUS>
<details>``), could not be reached (one line naming the target), or a download could not be
saved; 2 usage, a bad setting, no CA certificate, or not logged in; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from tmsp_client import config
from tmsp_client.arguments import Parser
from tmsp_client.commands import (
    accounts,
    admin,
    mitigation,
    notifications,
    password,
    portal,
    products,
    reports,
    signin,
    twofactor,
)
from tmsp_client.connection import MissingCA, describe_error
from tmsp_client.context import Context, UsageError
from tmsp_client.output import Output
from tmsp_client.session import NotLoggedIn
from tmsp_client.transfer import DownloadError

COMMAND_GROUPS = (
    signin,
    password,
    twofactor,
    portal,
    accounts,
    products,
    reports,
    notifications,
    mitigation,
    admin,
)
"""Each registers its commands; a command's ``run(ctx)`` does one RPC (or a few)."""


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--auth", metavar="HOST:PORT", help="auth (env TMSP_AUTH_TARGET)")
    common.add_argument(
        "--portal", metavar="HOST:PORT", help="the portal, i.e. the reporter (TMSP_REPORTER_TARGET)"
    )
    common.add_argument(
        "--ingest", metavar="HOST:PORT", help="ingest's registry (TMSP_INGEST_TARGET)"
    )
    common.add_argument(
        "--notifier", metavar="HOST:PORT", help="the notifier (TMSP_NOTIFIER_TARGET)"
    )
    common.add_argument("--tls-dir", metavar="DIR", help="holds ca.pem (TMSP_TLS_DIR)")
    common.add_argument("--json", action="store_true", help="print the answer as JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(
        prog="tmsp",
        parents=[common],
        description="The Threat Management Services Portal from the command line.",
        epilog="Run `tmsp login --email E` first. Details: docs/client.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub, common)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"tmsp: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage
    try:
        given = {v: getattr(args, o[2:].replace("-", "_"), None) for v, o in config.OPTIONS.items()}
        settings = config.load(given)
    except config.BadSetting as exc:
        return _fail(str(exc), 2)
    ctx = Context(args, settings, Output(json=getattr(args, "json", False)))
    try:
        args.run(ctx)
    except NotLoggedIn as exc:
        why = f" ({exc})" if str(exc) else ""
        return _fail(f"not logged in{why}: run `tmsp login`", 2)
    except (UsageError, MissingCA) as exc:
        return _fail(str(exc), 2)
    except grpc.RpcError as exc:
        return _fail(describe_error(exc, ctx.calls.last), 1)
    except DownloadError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return 1  # the reader went away (| head): nothing to say
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

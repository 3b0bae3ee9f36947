"""Argument types and options shared by the command groups, and paging."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tmsp_client import config
from tmsp_client.output import enum_choices, parse_enum

if TYPE_CHECKING:
    from tmsp_client.output import ProtoEnum

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Subparsers = Any
"""``argparse._SubParsersAction`` (private in typeshed's eyes)."""


def iso_time(text: str) -> datetime:
    """ISO 8601 (``2026-06-01``, ``2026-06-01T08:00``, ``...Z`` or ``...+02:00``); a time
    without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-06-01 or 2026-06-01T08:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def enum_list(enum: ProtoEnum, aliases: dict[str, str] | None = None) -> Callable[[str], list[int]]:
    """An argument type: comma-separated labels of ``enum`` to their values."""

    def parse(text: str) -> list[int]:
        try:
            return [parse_enum(enum, part, aliases) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def enum_value(enum: ProtoEnum, aliases: dict[str, str] | None = None) -> Callable[[str], int]:
    """An argument type: one label of ``enum`` to its value."""

    def parse(text: str) -> int:
        try:
            return parse_enum(enum, text, aliases)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def labels(enum: ProtoEnum) -> str:
    return "|".join(enum_choices(enum))


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def comma_list(text: str) -> list[str]:
    """``a,b`` -> ``["a", "b"]``; empty: none."""
    return [part.strip() for part in text.split(",") if part.strip()]


def whole(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return value


VALUE_OPTIONS = frozenset(config.OPTIONS.values())
"""The common options that take a value (the next word, unless written ``--opt=value``)."""


class Parser(argparse.ArgumentParser):
    """argparse, plus a default verb for a group: ``tmsp account ID`` is ``tmsp account show
    ID``, ``tmsp users --json`` is ``tmsp users list --json`` (the forms from before these
    commands had verbs). Its sub-parsers are of this class too (argparse makes them so)."""

    default_verb: str = ""
    verbs: Collection[str] = ()

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads; same signature
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and self.default_verb:
            args = with_default_verb(list(args), self.default_verb, self.verbs)
        return super().parse_known_args(args, namespace)


def with_default_verb(words: list[str], default: str, verbs: Collection[str]) -> list[str]:
    """``words`` (what follows a group's name) with ``default`` in front unless their first
    word is one of ``verbs``, or there is none and help is asked for."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--":
            break
        elif word.startswith("-") and word != "-":
            skip = word in VALUE_OPTIONS
        else:
            if word in verbs:
                return words
            break
    else:
        if "-h" in words or "--help" in words:
            return words
    return [default, *words]


def command(
    sub: Subparsers, common: argparse.ArgumentParser, name: str, help: str, run: Callable[..., None]
) -> argparse.ArgumentParser:
    """A command (or a group's verb) taking the common options; ``run(ctx)`` does it."""
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help)
    parser.set_defaults(run=run)
    return parser


def command_group(sub: Subparsers, name: str, help: str, default: str = "") -> Subparsers:
    """A command of verbs (``tmsp reports list``); with ``default``, that verb is the one
    meant when none is named (``tmsp users`` is ``tmsp users list``)."""
    described = f"{help}. Without a verb: `{name} {default}`." if default else None
    group = sub.add_parser(name, help=help, description=described)
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    if default:
        group.default_verb = default
        group.verbs = verbs.choices  # filled in as the verbs are added
    return verbs


def add_account(parser: argparse.ArgumentParser, default: str = "your own") -> None:
    parser.add_argument(
        "--account", metavar="ID", default="", help=f"the customer account (default: {default})"
    )


def add_limit(parser: argparse.ArgumentParser, default: int = 100) -> None:
    parser.add_argument(
        "--limit",
        type=positive,
        default=default,
        help=f"at most this many (following pages; default {default})",
    )


def add_output(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"where to save it ('-': stdout; a directory: the file inside; default {default})",
    )


def paged(
    call: Callable[[Req], Resp], request: Req, field: str, limit: int, page_max: int = 500
) -> Resp:
    """One response holding the items of repeated ``field`` over consecutive pages of
    ``call(request)`` (its ``page_token`` and ``page_size`` set for each), up to ``limit``
    items or the last page; its ``next_page_token`` is empty."""
    pager: Any = request
    items: list[Any] = []
    while True:
        pager.page_size = min(limit - len(items), page_max)
        page = call(request)
        got = list(getattr(page, field))
        items.extend(got[: limit - len(items)])
        pager.page_token = page.next_page_token  # type: ignore[attr-defined]  # every list page has one
        if not pager.page_token or not got or len(items) >= limit:
            break
    merged = type(page)()
    getattr(merged, field).extend(items)
    return merged

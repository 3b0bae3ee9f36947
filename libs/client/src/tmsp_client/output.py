"""What the client prints: aligned tables and field listings for people, the protobuf as
JSON (``--json``, field names as in the .proto files) for scripts, and download progress
on stderr."""

from __future__ import annotations

import json as json_module
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

    ProtoEnum = _EnumTypeWrapper[Any]
    """A generated enum (``incidents_pb2.IncidentStatus``): its class is the wrapper."""

NONE = "-"


def enum_prefix(enum: ProtoEnum) -> str:
    """``INCIDENT_STATUS_`` for IncidentStatus: what every value name of it starts with."""
    name = enum.DESCRIPTOR.name
    snake = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()
    return f"{snake}_"


def enum_label(enum: ProtoEnum, value: int) -> str:
    """``false-positive`` for INCIDENT_STATUS_FALSE_POSITIVE; the number if unknown."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(enum_prefix(enum)).lower().replace("_", "-")


def enum_choices(enum: ProtoEnum) -> list[str]:
    """The labels of every value but UNSPECIFIED, in number order."""
    return [enum_label(enum, v) for v in sorted(enum.values()) if v != 0]


def parse_enum(enum: ProtoEnum, text: str, aliases: dict[str, str] | None = None) -> int:
    """The value labelled ``text`` (case, ``-`` or ``_`` do not matter; ``aliases`` maps
    short forms to labels). Raises ValueError listing the choices."""
    label = text.strip().lower().replace("_", "-")
    label = (aliases or {}).get(label, label)
    for value in enum.values():
        if value != 0 and enum_label(enum, value) == label:
            return int(value)
    choices = ", ".join([*(aliases or {}), *enum_choices(enum)])
    raise ValueError(f"{text!r} is not one of: {choices}")


def ts(value: Timestamp, *, present: bool = True) -> str:
    """A timestamp as people read it, in UTC to the second; ``-`` when unset."""
    if not present or (value.seconds == 0 and value.nanos == 0):
        return NONE
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int) -> str:
    """``1.5 MiB``: bytes in binary units."""
    amount = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{n} B"  # pragma: no cover - the loop returns


def yes_no(value: bool | None) -> str:
    return NONE if value is None else ("yes" if value else "no")


def joined(values: Iterable[str], sep: str = ", ") -> str:
    text = sep.join(v for v in values if v)
    return text or NONE


def _cell(value: object) -> str:
    text = NONE if value is None or value == "" else str(value)
    return " ".join(text.split())  # outside text never breaks the table's lines


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, a header line in capitals, no trailing blanks."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [[h.upper() for h in headers], *cells]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    )


def render_fields(pairs: Iterable[tuple[str, object]]) -> str:
    """``label: value`` lines, values aligned."""
    items = [(label, _cell(value)) for label, value in pairs]
    width = max((len(label) for label, _ in items), default=0)
    return "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in items)


def to_json(message: Message, indent: int | None = 2) -> str:
    """Field names as in the .proto files, defaults included; ``indent`` None: one line."""
    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=indent,
        sort_keys=False,
    )


class Output:
    """stdout for results, stderr for progress and notes; JSON instead of text with --json."""

    def __init__(self, json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json = json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def result(self, message: Message, text: str | None) -> None:
        """``message`` as JSON with --json, else ``text`` (when there is any)."""
        if self.json:
            print(to_json(message), file=self.out)
        elif text:
            print(text, file=self.out)

    def table(
        self,
        message: Message,
        headers: Sequence[str],
        rows: Iterable[Sequence[object]],
        empty: str = "",
    ) -> None:
        """``message`` as JSON with --json, else ``rows`` as a table (``empty`` if none)."""
        if self.json:
            self.result(message, None)
            return
        cells = list(rows)
        self.result(message, render_table(headers, cells) if cells or not empty else empty)

    def step(self, message: Message, text: str) -> None:
        """One step of a dialogue: ``message`` as one line of JSON with --json, else
        ``text``; flushed, as whoever answers the next prompt has to read it first."""
        print(to_json(message, indent=None) if self.json else text, file=self.out, flush=True)

    def data(self, record: dict[str, Any], text: str) -> None:
        """What is not a protobuf (the local session): a JSON object with --json."""
        if self.json:
            print(json_module.dumps(record, indent=2), file=self.out)
        else:
            print(text, file=self.out)

    def note(self, text: str) -> None:
        print(text, file=self.err)


class Progress:
    """Bytes received so far, rewritten in place on a terminal (at most 10 times a second);
    only the final summary line elsewhere."""

    def __init__(self, label: str, err: TextIO | None = None, every_s: float = 0.1) -> None:
        self.label = label
        self.err = err or sys.stderr
        self.tty = self.err.isatty()
        self.every_s = every_s
        self.received = 0
        self._shown_at = 0.0
        self._started = time.monotonic()

    def add(self, n: int) -> None:
        self.received += n
        now = time.monotonic()
        if self.tty and now - self._shown_at >= self.every_s:
            self._shown_at = now
            print(f"\r\033[K{self.label}: {size(self.received)}", end="", file=self.err, flush=True)

    def done(self, where: str) -> str:
        """The summary line (also printed)."""
        seconds = time.monotonic() - self._started
        line = f"{self.label}: {self.received} bytes ({size(self.received)}) in {seconds:.1f}s"
        line += f" -> {where}"
        if self.tty:
            print("\r\033[K", end="", file=self.err)
        print(line, file=self.err, flush=True)
        return line

    def abandon(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=self.err, flush=True)

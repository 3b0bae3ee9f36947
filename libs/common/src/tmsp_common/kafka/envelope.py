"""The common envelope every bus message travels in (see proto/tmsp/events/v1/envelope.proto)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.events.v1.envelope_pb2 import Envelope

M = TypeVar("M", bound=Message)

SCHEMA_VERSION = 1


class EnvelopeError(ValueError):
    """The bytes are not an envelope, or not one carrying the expected payload type."""


def to_timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def set_epoch_seconds(target: Timestamp, seconds: float) -> None:
    """Set ``target`` (a message's Timestamp field, in place) to seconds since the epoch: no
    datetime and no Timestamp object in between (hot paths: an incident's timeline)."""
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    target.seconds = whole
    target.nanos = nanos


def epoch_seconds(ts: Timestamp) -> float:
    """Seconds since the epoch of a Timestamp (0.0 when unset)."""
    return ts.seconds + ts.nanos / 1e9


def wrap(
    payload: Message,
    *,
    producer: str,
    account_id: str = "",
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    trace_id: str | None = None,
    now: datetime | None = None,
) -> Envelope:
    """Put ``payload`` in a new envelope; ids are generated when not given."""
    produced = now or datetime.now(UTC)
    env = Envelope(
        event_id=event_id or uuid.uuid4().hex,
        event_type=payload.DESCRIPTOR.full_name,
        account_id=account_id,
        trace_id=trace_id or uuid.uuid4().hex,
        schema_version=SCHEMA_VERSION,
        payload=payload.SerializeToString(),
        producer=producer,
    )
    env.occurred_at.CopyFrom(to_timestamp(occurred_at or produced))
    env.produced_at.CopyFrom(to_timestamp(produced))
    return env


def unwrap(data: bytes | None, message_type: type[M]) -> tuple[Envelope, M]:
    """Decode an envelope and its payload; raises :class:`EnvelopeError` with the reason."""
    if not data:
        raise EnvelopeError("empty message")
    env = Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as exc:
        raise EnvelopeError(f"not an envelope: {exc}") from exc
    expected = message_type.DESCRIPTOR.full_name
    if env.event_type != expected:
        raise EnvelopeError(f"payload type {env.event_type!r}, expected {expected!r}")
    if not env.event_id:
        raise EnvelopeError("envelope without event_id")
    payload = message_type()
    try:
        payload.ParseFromString(env.payload)
    except DecodeError as exc:
        raise EnvelopeError(f"undecodable {expected} payload: {exc}") from exc
    return env, payload

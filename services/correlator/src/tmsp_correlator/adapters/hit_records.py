"""How hits travel between the correlator's two stages (JSON lists, one record per
partition), and window states to the table's changelog.

A hit goes to the hits-topic partition that Kafka's default partitioner gives its group key,
so every hit of a group meets in one worker and one table partition (whose changelog
partition a table write finds through the record it came in). Batching the hits of many
events into one record per partition spares faust's per-record cost (2-3 hits per event).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import orjson
from aiokafka.partitioner import murmur2

from tmsp_common.kafka.envelope import EnvelopeError
from tmsp_correlator.domain.correlation import DERIVED_STATE, SEEN, GroupState, Hit

#: Upper bound of one hits record (Kafka refuses records over 1 MiB by default).
MAX_HITS_RECORD_BYTES = 256 * 1024


@functools.lru_cache(maxsize=100_000)
def hit_partition(group_key: str, partitions: int) -> int:
    """The hits-topic partition of a group: Kafka's default (murmur2) partition of the key,
    as a per-key record had, so window states stay where earlier workers put them. Cached:
    groups repeat, and the pure-Python hash costs about 7 us."""
    return int(murmur2(group_key.encode()) & 0x7FFFFFFF) % partitions


def hit_records(
    hits: list[Hit], partitions: int, max_bytes: int = MAX_HITS_RECORD_BYTES
) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) records carrying ``hits``: per partition, JSON lists of the
    hits whose group keys hash to it (so a table write finds its group's changelog
    partition through the record, as a per-key record would), split so that no record
    exceeds ``max_bytes`` (a hot group can take most hits of a batch); one hit per record at
    least, whatever its size. The key is the first hit's group key."""
    parts: dict[int, list[Hit]] = {}
    for hit in hits:
        parts.setdefault(hit_partition(hit["k"], partitions), []).append(hit)
    records: list[tuple[int, bytes, bytes]] = []
    for partition, part in sorted(parts.items()):
        for chunk, value in _bounded(part, max_bytes):
            records.append((partition, chunk[0]["k"].encode(), value))
    return records


def _bounded(part: list[Hit], max_bytes: int) -> list[tuple[list[Hit], bytes]]:
    """``part`` in order, as JSON lists of at most ``max_bytes`` (a hit larger than that
    alone in its list). One orjson call for the common case; an oversized list is cut into
    as many even slices as its size asks for, and a slice still too large is cut again."""
    value = orjson.dumps(part)
    if len(value) <= max_bytes or len(part) == 1:
        return [(part, value)]
    pieces = min(len(part), -(-len(value) // max_bytes) + 1)
    step = -(-len(part) // pieces)
    out: list[tuple[list[Hit], bytes]] = []
    for i in range(0, len(part), step):
        out.extend(_bounded(part[i : i + step], max_bytes))
    return out


def decode_hits(value: bytes | None) -> list[Hit]:
    """The hits of one record (a list; a single hit object from older workers too)."""
    try:
        decoded = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"undecodable hits record: {exc}") from exc
    hits = [decoded] if isinstance(decoded, dict) else decoded
    if not isinstance(hits, list) or not all(
        isinstance(h, dict) and isinstance(h.get("k"), str) for h in hits
    ):
        raise EnvelopeError("undecodable hits record: not a list of hits with a group key")
    return hits


ChangelogRecord = tuple[bytes, bytes | None]
"""(key, value) of a window-state changelog record; None deletes the group."""


def changelog_key(key: str) -> bytes:
    """A window-state key as the table's changelog carries it: JSON, as faust's json key
    serializer writes it."""
    return orjson.dumps(key)


def state_value(state: GroupState) -> bytes:
    """A window state as the table's changelog carries it: JSON written with orjson (the
    stdlib encoder was a sixth of the worker's time: a hot group's state is written again
    on every batch), without the indexes (``DERIVED_STATE``), which ``apply_hit`` rebuilds
    from the window after a recovery."""
    if any(k in state for k in DERIVED_STATE):
        state = {k: v for k, v in state.items() if k not in DERIVED_STATE}
    return orjson.dumps(state)


def group_of(key: bytes) -> str:
    """The group key of a changelog record's key (the inverse of :func:`changelog_key`)."""
    group: str = orjson.loads(key)
    return group


def state_of(value: bytes) -> GroupState:
    """The window state of a changelog record's value (the inverse of :func:`state_value`;
    ``apply_hit`` rebuilds the indexes it leaves out)."""
    state: GroupState = orjson.loads(value)
    return state


def changelog_records(
    states: dict[str, GroupState], forgotten: Iterable[str], partitions: int, now: float
) -> dict[int, list[ChangelogRecord]]:
    """Per changelog partition, the records of a batch's changed ``states`` (each stamped
    :data:`SEEN` ``now`` first) and the tombstones of ``forgotten`` groups. A group's
    changelog partition is its hits partition, as faust's own write would pick (the
    partition of the record the hit came in)."""
    parts: dict[int, list[ChangelogRecord]] = {}
    for key, state in states.items():
        state[SEEN] = now
        parts.setdefault(hit_partition(key, partitions), []).append(
            (changelog_key(key), state_value(state))
        )
    for key in forgotten:
        parts.setdefault(hit_partition(key, partitions), []).append((changelog_key(key), None))
    return parts

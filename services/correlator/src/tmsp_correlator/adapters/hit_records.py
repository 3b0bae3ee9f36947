"""How hits travel between the correlator's two stages: JSON lists, one record per partition.

A hit goes to the hits-topic partition that Kafka's default partitioner gives its group key,
so every hit of a group meets in one worker and one table partition (whose changelog
partition a table write finds through the record it came in). Batching the hits of many
events into one record per partition spares faust's per-record cost (2-3 hits per event).
"""

from __future__ import annotations

import functools

import orjson
from aiokafka.partitioner import murmur2

from tmsp_common.kafka.envelope import EnvelopeError
from tmsp_correlator.domain.correlation import Hit

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

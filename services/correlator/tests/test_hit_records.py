"""Hits travel between the stages as one record per hits partition."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from tmsp_common.kafka.envelope import EnvelopeError
from tmsp_correlator.entrypoints.faust_app import decode_hits, hit_partition


@pytest.mark.parametrize("partitions", [1, 6, 31])
def test_a_group_lands_where_kafka_would_put_a_record_keyed_by_it(partitions: int) -> None:
    # a per-key record used to carry each hit: states stay in the same table partitions
    kafka = DefaultPartitioner()
    every = list(range(partitions))
    for n in range(200):
        key = f'acc{n % 7}|rule-{n % 5}|["host{n}"]'
        assert hit_partition(key, partitions) == kafka(key.encode(), every, every)


def test_a_record_holds_a_list_of_hits_and_a_single_hit_from_an_older_worker() -> None:
    hits = [{"k": "a|c|[]", "e": "e1"}, {"k": "b|c|[]", "e": "e2"}]
    assert decode_hits(orjson.dumps(hits)) == hits
    assert decode_hits(orjson.dumps(hits[0])) == [hits[0]]


@pytest.mark.parametrize(
    "value", [b"", b"\x00garbage", b"[1, 2]", b'[{"e": "no key"}]', b'"text"', b'{"k": 3}']
)
def test_an_undecodable_hits_record_is_refused_with_the_reason(value: bytes) -> None:
    with pytest.raises(EnvelopeError, match="undecodable hits record"):
        decode_hits(value)

"""Hits travel between the stages as one record per hits partition."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from tmsp_common.kafka.envelope import EnvelopeError
from tmsp_correlator.adapters.hit_records import decode_hits, hit_partition, hit_records


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


def _hits(n: int, groups: int, summary: str = "s") -> list[dict[str, object]]:
    return [{"k": f'acc|c|["h{i % groups}"]', "e": f"e{i}", "s": summary} for i in range(n)]


def test_hits_leave_as_one_record_per_partition_each_group_where_kafka_puts_it() -> None:
    hits = _hits(300, groups=40)
    records = hit_records(hits, 6)
    assert len(records) == len({p for p, _, _ in records}) <= 6  # small: one per partition
    back = []
    for partition, key, value in records:
        got = decode_hits(value)
        assert {hit_partition(h["k"], 6) for h in got} == {partition}
        assert key == got[0]["k"].encode()
        back.extend(got)
    assert sorted(h["e"] for h in back) == sorted(h["e"] for h in hits)  # none lost or doubled


def test_a_hot_partition_is_split_so_no_record_exceeds_the_bound() -> None:
    hits = _hits(2000, groups=1, summary="x" * 400)  # one hot group: one partition
    records = hit_records(hits, 6, max_bytes=64 * 1024)
    assert len(records) > 10 and len({p for p, _, _ in records}) == 1
    assert all(len(v) <= 64 * 1024 for _, _, v in records)
    # in order: the group's hits keep their sequence across records
    assert [h["e"] for _, _, v in records for h in decode_hits(v)] == [h["e"] for h in hits]
    # a single hit bigger than the bound still travels, alone
    (only,) = hit_records(_hits(1, groups=1, summary="y" * 5000), 6, max_bytes=1024)
    assert len(decode_hits(only[2])) == 1

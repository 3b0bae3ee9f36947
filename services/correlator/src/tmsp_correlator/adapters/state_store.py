"""The window-state table's store: faust's memory store, with its own changelog reading.

faust recovers a memory table by reading the changelog through its own consumer one record
at a time (~5,000 records/s here, 35x slower than a plain consumer reading the same
partitions, see the benchmark's round 13). This store reads its assigned changelog
partitions itself when partitions are assigned, with a plain aiokafka consumer, in the
changelog's own format (:mod:`tmsp_correlator.adapters.hit_records`), and tells faust the
offset it reached (``persisted_offset``), so faust's recovery only reads what was written
after that. If the reading fails, faust reads the partitions from the start as before
(the same records, last one per key wins, so the outcome is the same).

On every rebalance the states of partitions this worker no longer has are dropped
(another worker changes them meanwhile), and a partition that comes back is read again
from the start. Registered with faust as the ``tmsp-memory://`` store (an entry point of
the ``faust.stores`` group, see pyproject.toml).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import memory
from faust.types import TP

from tmsp_common.logging import get_logger
from tmsp_correlator.adapters.hit_records import group_of, hit_partition, state_of

log = get_logger(__name__)

STORE_URL = "tmsp-memory://"
"""The faust ``store`` setting that selects this store."""
FETCH_BYTES = 8 << 20
"""Per partition and fetch: a hot group's state is ~165 kB."""


Record = tuple[bytes | None, bytes | None]
"""(key, value) of a changelog record."""


async def read_partitions(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    take: Callable[[list[Record]], None],
    *,
    stall_s: float = 30.0,
) -> dict[TopicPartition, int]:
    """Read the partitions from their ``starts`` to their end offsets (taken first),
    handing each fetched batch of records to ``take`` (in offset order per partition), and
    return the end offsets. TimeoutError if the reading makes no progress for ``stall_s``
    (a broker gone mid-way)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        # a start below the log's first offset reads from there, never from the end
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
    )
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(starts))
        left = {tp for tp in starts if ends[tp] > starts[tp]}
        if not left:
            return ends
        consumer.assign(list(left))
        for tp in left:
            consumer.seek(tp, starts[tp])
        progress = time.monotonic()
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=10_000)
            for tp, got in batch.items():
                take([(r.key, r.value) for r in got if r.offset < ends[tp]])
            before = len(left)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if batch or len(left) < before:
                progress = time.monotonic()
            elif time.monotonic() - progress > stall_s:
                raise TimeoutError(f"no changelog records for {stall_s:.0f} s")
        return ends
    finally:
        await consumer.stop()


def apply_records(data: MutableMapping[Any, Any], records: Iterable[Record]) -> int:
    """Apply changelog records in order (a state, or None: the group is forgotten), as
    faust's recovery would. Returns how many were applied."""
    n = 0
    for key, value in records:
        if key is None:
            continue
        group = group_of(key)
        if value is None:
            data.pop(group, None)
        else:
            data[group] = state_of(value)
        n += 1
    return n


class ChangelogStore(memory.Store[str, Any]):
    """faust's memory store that reads its own changelog partitions on assignment."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._next: dict[TP, int] = {}
        """Per assigned changelog partition, the next offset to read."""
        self._reached: dict[TP, int] = {}
        """The last offset read in the current rebalance (what faust resumes from)."""

    def persisted_offset(self, tp: TP) -> int | None:
        return self._reached.get(tp)

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        mine = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        self._reached.clear()
        gone = {tp.partition for tp in self._next if tp not in mine}
        if gone:
            self._drop(gone)
        self._next = {tp: self._next.get(tp, 0) for tp in mine}
        if mine:
            await self._read(mine)

    def _drop(self, partitions: set[int]) -> None:
        """Forget the states of these partitions (another worker has them now)."""
        count = self.table.partitions
        for key in [k for k in self.data if hit_partition(k, count) in partitions]:
            del self.data[key]
            self._key_partition.pop(key, None)

    async def _read(self, tps: set[TP]) -> None:
        started = time.perf_counter()
        starts = {TopicPartition(tp.topic, tp.partition): self._next[tp] for tp in tps}
        bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker)
        applied = 0

        def take(records: list[Record]) -> None:
            nonlocal applied
            applied += apply_records(self.data, records)

        try:
            ends = await read_partitions(bootstrap, starts, take)
        except Exception as exc:  # noqa: BLE001 - faust's own recovery reads them instead
            log.warning(
                "reading window states failed; faust recovers them",
                error=f"{type(exc).__name__}: {exc}",
            )
            self._drop({tp.partition for tp in tps})
            self._next = dict.fromkeys(self._next, 0)
            return
        for tp in tps:
            end = ends[TopicPartition(tp.topic, tp.partition)]
            self._next[tp] = end
            if end > 0:
                self._reached[tp] = end - 1  # faust's convention: the last offset it has
        log.info(
            "window states read from the changelog",
            partitions=sorted(tp.partition for tp in tps),
            records=applied,
            groups=len(self.data),
            seconds=round(time.perf_counter() - started, 2),
        )

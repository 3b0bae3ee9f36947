"""Window states reach the table's changelog as faust itself writes them, so that faust's
recovery reads what the correlate stage's record batches wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmsp_correlator.adapters.hit_records import (
    changelog_key,
    changelog_records,
    group_of,
    hit_partition,
    state_of,
)
from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.domain.correlation import SEEN
from tmsp_correlator.entrypoints.faust_app import (
    STATE,
    STATE_CODEC,
    WINDOWS_TABLE,
    changelog_topic_name,
    internal_topics,
    make_app,
)

KEYS = ['acc1|corr|["pc1"]', 'acc1|corr|["\\u00e9t\\u00e9","x"]', 'acc2|c|["h\\"q"]', "ünï|c|[]"]


@pytest.mark.parametrize("key", KEYS)
def test_a_state_record_is_the_one_faust_would_write(key: str, tmp_path: Path) -> None:
    settings = CorrelatorSettings(app_id="fmt", data_dir=str(tmp_path))
    app = make_app(settings)
    table = app.Table(WINDOWS_TABLE, default=None, partitions=2)
    table.value_serializer = STATE_CODEC  # type: ignore[attr-defined]  # as wire() does
    topic = table.changelog_topic
    assert topic.get_topic_name() == changelog_topic_name(settings)
    state = {"w": [[1.0, "r", "e1", None, "s", "h", "", ""]], "max": 1.0, "inc": None}
    faust_key, _ = topic.prepare_key(key, table.key_serializer)
    faust_value, _ = topic.prepare_value({**state, "ids": {"e1": 1.0}}, table.value_serializer)
    assert changelog_key(key) == faust_key
    assert STATE.dumps({**state, "ids": {"e1": 1.0}}) == faust_value
    assert app.serializers.loads_key(None, changelog_key(key), serializer="json") == key
    # and what a restart reads back (the store's own reading of the changelog)
    assert group_of(faust_key) == key
    assert state_of(faust_value) == state
    # what the correlate stage sends: the state stamped, in its group's partition, and a
    # forgotten group's tombstone
    parts = changelog_records({key: {**state, "ids": {"e1": 1.0}}}, [key], 2, now=5.0)
    stamped, _ = topic.prepare_value({**state, SEEN: 5.0}, table.value_serializer)
    assert parts == {hit_partition(key, 2): [(faust_key, stamped), (faust_key, None)]}


def test_internal_topics_keep_what_a_restart_reads_small() -> None:
    settings = CorrelatorSettings(app_id="cfg", changelog_segment_bytes=8 * 1024 * 1024)
    by_name = {t.name: t.config() for t in internal_topics(settings)}
    changelog = by_name[changelog_topic_name(settings)]
    assert changelog["cleanup.policy"] == "compact"
    assert changelog["segment.bytes"] == str(8 * 1024 * 1024)
    assert changelog["segment.ms"] == str(3600 * 1000)
    hits = by_name["cfg-hits"]
    assert (hits["cleanup.policy"], hits["retention.ms"]) == ("delete", str(24 * 3600 * 1000))
    with pytest.raises(ValueError, match="changelog_segment_bytes"):
        CorrelatorSettings(changelog_segment_bytes=4096)

"""Window states reach the table's changelog as faust itself writes them, so that faust's
recovery reads what the correlate stage's record batches wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmsp_correlator.config import CorrelatorSettings
from tmsp_correlator.entrypoints.faust_app import (
    STATE,
    STATE_CODEC,
    WINDOWS_TABLE,
    changelog_key,
    changelog_topic_name,
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

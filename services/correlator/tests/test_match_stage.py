"""The match stage's batch step: hits name their origin; a bad detection is handed back."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from tmsp.events.v1 import detections_pb2
from tmsp_common.kafka.consumer import ConsumedEvent, InvalidEvent
from tmsp_common.kafka.envelope import wrap
from tmsp_common.kafka.topics import DETECTIONS
from tmsp_correlator.config import DEFAULT_RULES_DIR
from tmsp_correlator.domain.rules import RuleSet, load_rule_directory
from tmsp_correlator.entrypoints.stages import match_batch
from tmsp_correlator.testing import detection

PACK = Path(DEFAULT_RULES_DIR)
T0 = 1_790_000_000.0


def consumed(event_id: str, offset: int) -> ConsumedEvent[detections_pb2.Detection]:
    d = detection(event_id, T0 + offset, host=f"pc{offset}", severity="high")
    env = wrap(d, producer="test", account_id="acc1", event_id=event_id)
    return ConsumedEvent(DETECTIONS, 3, offset, b"tda1", env, d)


class Exploding:
    """The pack's rules, except that matching one event raises."""

    def __init__(self, rules: RuleSet, bad: str) -> None:
        self._rules = rules
        self._bad = bad

    def match(self, event: dict[str, Any]) -> Any:
        if event["event_id"] == self._bad:
            raise ValueError("boom")
        return self._rules.match(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)


def test_every_hit_names_the_record_its_detection_came_from() -> None:
    rules = load_rule_directory(PACK)
    hits = match_batch(rules, [consumed("e1", 10), consumed("e2", 11)], "t1.")
    assert {h["e"] for h in hits} == {"e1", "e2"}
    for h in hits:
        offset = 10 if h["e"] == "e1" else 11
        assert h["o"] == {"topic": "t1.tmsp.detections.v1", "partition": 3, "offset": offset}
        assert h["a"] == "acc1"


@pytest.mark.python_build
def test_a_detection_whose_matching_raises_is_handed_back_and_the_rest_match() -> None:
    rules = cast(RuleSet, Exploding(load_rule_directory(PACK), bad="e2"))
    batch = [consumed("e1", 1), consumed("e2", 2), consumed("e3", 3)]
    with pytest.raises(InvalidEvent) as raised:
        match_batch(rules, batch, "")
    assert raised.value.event is batch[1]
    assert raised.value.reason == "handler failed: ValueError('boom')"
    # the runner dead-letters it and calls again with the rest
    rest = [e for e in batch if e is not raised.value.event]
    assert {h["e"] for h in match_batch(rules, rest, "")} == {"e1", "e3"}

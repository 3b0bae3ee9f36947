from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tmsp.events.v1 import accounts_pb2, detections_pb2
from tmsp_common.kafka import topics
from tmsp_common.kafka.envelope import EnvelopeError, from_timestamp, unwrap, wrap


def test_wrap_then_unwrap_round_trips_payload_and_metadata() -> None:
    when = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    det = detections_pb2.Detection(event_id="e1", account_id="a1", threat_name="WORM_X")
    env = wrap(det, producer="ingest", account_id="a1", occurred_at=when, trace_id="tr")
    env2, det2 = unwrap(env.SerializeToString(), detections_pb2.Detection)
    assert det2 == det
    assert env2.account_id == "a1"
    assert env2.trace_id == "tr"
    assert env2.producer == "ingest"
    assert env2.schema_version == 1
    assert from_timestamp(env2.occurred_at) == when
    assert env2.event_type == "tmsp.events.v1.Detection"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\xff\xff\xff", "not an envelope"),
    ],
)
def test_unwrap_rejects_garbage_with_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        unwrap(data, detections_pb2.Detection)


def test_unwrap_rejects_the_wrong_payload_type() -> None:
    env = wrap(accounts_pb2.AccountSnapshot(account_id="a"), producer="auth")
    with pytest.raises(EnvelopeError, match="expected 'tmsp.events.v1.Detection'"):
        unwrap(env.SerializeToString(), detections_pb2.Detection)


def test_registry_names_are_unique_and_versioned() -> None:
    all_topics = topics.with_dead_letters(topics.ALL_TOPICS)
    names = [t.name for t in all_topics]
    assert len(names) == len(set(names))
    assert all(t.name.startswith("tmsp.") for t in all_topics)
    assert all(".v1" in t.name for t in all_topics)


def test_compacted_topics_have_no_retention_and_dead_letters_keep_a_month() -> None:
    assert topics.ACCOUNTS.config() == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "60000",
    }
    dlq = topics.DETECTIONS.dead_letter
    assert dlq is not None
    assert dlq.name == "tmsp.detections.v1.dlq"
    assert dlq.config()["retention.ms"] == str(30 * topics.DAY_MS)
    assert topics.INGEST_REJECTED.dead_letter is None


def test_qualified_names_and_lookup() -> None:
    assert topics.DETECTIONS.qualified("it1.") == "it1.tmsp.detections.v1"
    assert topics.by_name("tmsp.incidents.v1") is topics.INCIDENTS
    assert topics.by_name("tmsp.incidents.v1.dlq").message_type is None
    with pytest.raises(KeyError):
        topics.by_name("nope")

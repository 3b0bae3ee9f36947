"""Token bucket, failure throttle and syslog stream framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_ingest.domain.bandwidth import TokenBucket
from tmsp_ingest.domain.framing import FrameDecoder, FramingError
from tmsp_ingest.domain.throttle import FailureThrottle


def test_token_bucket_long_run_rate() -> None:
    bucket = TokenBucket(1000, now=0.0)
    now, waited = 0.0, 0.0
    for _ in range(10):
        wait = bucket.take(500, now)
        waited += wait
        now += wait
    # 5000 bytes at 1000 B/s with a 1000-byte burst: 4 seconds of waiting.
    assert waited == pytest.approx(4.0)
    assert TokenBucket(0).take(10**9, 0.0) == 0.0


def test_throttle_window_and_memory_bound() -> None:
    throttle = FailureThrottle(limit=2, window=10.0, max_addresses=3)
    throttle.failed("a", 0.0)
    assert throttle.blocked_for("a", 1.0) == 0.0
    throttle.failed("a", 1.0)
    assert throttle.blocked_for("a", 2.0) == pytest.approx(9.0)
    assert throttle.blocked_for("a", 11.0) == 0.0
    for address in "bcde":
        throttle.failed(address, 0.0)
    assert len(throttle._failures) == 3  # noqa: SLF001


messages = st.lists(
    st.binary(min_size=1, max_size=200).filter(lambda m: b"\n" not in m), max_size=10
)


@given(messages, st.integers(1, 50))
def test_octet_counted_frames_survive_any_chunking(msgs: list[bytes], size: int) -> None:
    stream = b"".join(b"%d %s" % (len(m), m) for m in msgs)
    decoder = FrameDecoder(1024)
    out: list[bytes] = []
    for i in range(0, len(stream), size):
        out.extend(decoder.feed(stream[i : i + size]))
    assert out == msgs


def test_newline_framing_and_mixing() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(b"<13>hello\r\n<13>wor") == [b"<13>hello"]
    assert decoder.feed(b"ld\n5 <13>x") == [b"<13>world", b"<13>x"]


@pytest.mark.parametrize("data", [b"99999 x", b"01 x", b"1234567890123", b"<" + b"x" * 200])
def test_bad_framing(data: bytes) -> None:
    with pytest.raises(FramingError):
        FrameDecoder(100).feed(data)


async def test_gateway_bandwidth_waits_for_the_product_rate() -> None:
    import time
    from dataclasses import replace

    from tmsp_ingest.service_layer.gateway import Bandwidth
    from tmsp_ingest.testing import OPERATOR, REG, make_world

    world = make_world()
    product, _ = await world.registry.register(OPERATOR, replace(REG, upload_bandwidth=4096))
    bandwidth = Bandwidth()
    started = time.monotonic()
    await bandwidth.upload(product, 4096)  # the one-second burst
    assert time.monotonic() - started < 0.1
    await bandwidth.upload(product, 1024)
    assert time.monotonic() - started >= 0.2  # 1024 B at 4096 B/s
    unlimited = replace(product, upload_bandwidth=0)
    started = time.monotonic()
    await bandwidth.upload(unlimited, 10**9)
    assert time.monotonic() - started < 0.1

"""A byte-rate token bucket per product.

aiolimiter's AsyncLimiter meters *acquisitions* up to a fixed capacity; a single upload
chunk may be larger than one second's worth of bytes, which AsyncLimiter refuses
(``acquire(amount > max_rate)`` raises). This bucket lets a chunk borrow against the future
(the bucket goes negative) and tells the caller how long to wait, so any chunk size works and
the long-run rate is exact. Pure: the caller supplies the time and does the sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator

DOWNLOAD_PIECE = 16 * 1024
"""A download is written in pieces of this size, each after the bucket allowed it."""


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in order, in pieces of at most ``size`` bytes, none empty."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


class TokenBucket:
    """``rate`` bytes per second with a burst of ``burst`` bytes; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._tokens = self.burst
        self._stamp = now

    def take(self, amount: int, now: float) -> float:
        """Take ``amount`` bytes; returns the seconds to wait before sending them."""
        if self.rate <= 0:
            return 0.0
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._tokens -= amount
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

"""Failed authentications counted per source address, and throttled.

After ``limit`` failures within ``window`` seconds an address is refused until the window
has passed since its last failure. Memory is bounded: the oldest addresses are dropped.
"""

from __future__ import annotations

from collections import OrderedDict


class FailureThrottle:
    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 100_000):
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0 when it may now)."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        if now - last >= self.window:
            del self._failures[address]
            return 0.0
        if count >= self.limit:
            return self.window - (now - last)
        return 0.0

    def failed(self, address: str, now: float) -> None:
        count, last = self._failures.pop(address, (0, now))
        if now - last >= self.window:
            count = 0
        self._failures[address] = (count + 1, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

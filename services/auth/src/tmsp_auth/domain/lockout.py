"""Lockout policy: how many failures lock a user, for how long, and the hourly hard cap.

Failures (wrong password, wrong second factor) are counted per user. The counting itself is
atomic in the repository (a reservation is taken *before* the expensive check, so N
concurrent wrong attempts cannot get more guesses than the threshold); this module only
holds the numbers, so they are unit-testable with a fake clock. A reservation that is
never settled (its process died) counts as a failure once its lease is over, so a lockout
is always temporary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

HOURLY_HARD_CAP = 100
"""At most this many failures per user per hour, whatever the settings say."""

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class LockoutPolicy:
    """Lock after ``threshold`` failures for ``base_period``, doubling per consecutive lockout."""

    threshold: int = 5
    base_period: timedelta = timedelta(minutes=15)
    max_period: timedelta = timedelta(hours=24)
    growth: float = 2.0
    attempt_lease: timedelta = timedelta(minutes=1)
    """How long a reserved attempt may stay unsettled before it counts as a failure."""

    @property
    def effective_threshold(self) -> int:
        return max(1, min(self.threshold, HOURLY_HARD_CAP))

    def lock_period(self, previous_lockouts: int) -> timedelta:
        """Length of the next lockout after ``previous_lockouts`` consecutive ones."""
        factor = self.growth ** min(previous_lockouts, 32)
        return min(self.base_period * factor, self.max_period)


@dataclass(frozen=True)
class LockState:
    """The lockout fields of one user."""

    failures: int = 0
    locked_until: datetime | None = None
    lockouts: int = 0
    window_start: datetime | None = None
    window_failures: int = 0

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def window_full(self, now: datetime) -> bool:
        """True when the hourly hard cap is spent."""
        return (
            self.window_start is not None
            and now - self.window_start < HOUR
            and self.window_failures >= HOURLY_HARD_CAP
        )

    def can_attempt(self, policy: LockoutPolicy, now: datetime) -> bool:
        """Whether one more attempt may be reserved (the repository's filter says the same)."""
        return (
            not self.is_locked(now)
            and self.failures < policy.effective_threshold
            and not self.window_full(now)
        )

    def retry_after(self, now: datetime) -> timedelta:
        """How long until an attempt can be reserved again (zero if it can now)."""
        waits = [timedelta(0)]
        if self.locked_until is not None and self.locked_until > now:
            waits.append(self.locked_until - now)
        if self.window_full(now) and self.window_start is not None:
            waits.append(self.window_start + HOUR - now)
        return max(waits)

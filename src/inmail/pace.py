"""A token bucket, for what a client may send: a burst at once, then a steady rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pace:
    """A token bucket: `burst` at once, then `rate` a second. `wait(cost)` says how long what
    comes next (a message, its bytes, a frame) must wait (0 when it may be read now), and counts
    it."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._clock = rate, float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def wait(self, cost: float = 1.0) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

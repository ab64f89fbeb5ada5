"""Request budgets: a token bucket per caller (an API key, or a client address).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each request
takes one. An empty bucket answers how long until the next token, which becomes the
``Retry-After`` of a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# Buckets of callers that went quiet are dropped once there are this many (a full bucket
# carries no state worth keeping: a new one starts full too).
MAX_BUCKETS = 10_000


class RateLimiter:
    """One token bucket per caller.

    Args:
        rate: Tokens per second; ``0`` turns limiting off.
        burst: Bucket size: requests a quiet caller may send at once.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """Take a token for ``caller``: ``0.0`` if granted, else seconds until one is due."""
        if self.rate == 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                if len(self._buckets) >= MAX_BUCKETS and caller not in self._buckets:
                    self._prune(now)
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Drop the buckets that have refilled (their callers went quiet)."""
        full = [c for c, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for c in full:
            del self._buckets[c]
        if len(self._buckets) >= MAX_BUCKETS:  # everyone is busy: forget the lot
            self._buckets.clear()


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (at least 1)."""
    return str(max(1, math.ceil(seconds)))

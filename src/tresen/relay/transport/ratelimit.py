"""Token buckets in memory, for floods that must be cut before they reach a store."""

from __future__ import annotations

import time
from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` says how long to wait if empty."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, n: float = 1.0, now: float = 0.0) -> float:
        """Take ``n`` tokens; return 0 on success or the seconds until they would be there.
        ``now``: ``time.monotonic()`` if the caller has read it already (one read per frame)."""
        if not now:
            now = time.monotonic()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= n:
            self.tokens = tokens - n
            return 0.0
        self.tokens = tokens
        return (n - tokens) / self.rate


class KeyedLimiter:
    """One bucket per key (an address, a device id), forgotten when full again."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self.buckets: dict[Hashable, TokenBucket] = {}

    def take(self, key: Hashable, n: float = 1.0, now: float = 0.0) -> float:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self._prune()
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(n, now)

    def _prune(self) -> None:
        now = time.monotonic()
        full = [
            k for k, b in self.buckets.items() if b.tokens + (now - b.stamp) * b.rate >= b.burst
        ]
        for key in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[key]

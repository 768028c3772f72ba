"""Token buckets per key (client IP, fingerprint), kept in memory with a bounded size."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `rate_per_minute` requests per key, with bursts up to `burst`."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else seconds until one is free."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._refill(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token, without taking one: 0.0 when it has one now."""
        if not self.enabled or key not in self._buckets:
            return 0.0
        bucket = self._refill(key, self._clock())
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self._rate

    def _refill(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        return bucket


def retry_after_header(seconds: float) -> str:
    """A whole number of seconds, at least one, for the Retry-After header."""
    return str(max(1, math.ceil(seconds)))

"""Per-key request rate limits: token buckets held in memory.

Each key (a client_id, or a remote address for failed authentications) owns a
bucket of ``capacity`` tokens that refills at ``refill_per_second``; a request takes
one token or is refused with :class:`RateLimitExceededError` (HTTP 429) saying how long
to wait. State is per process: a server restart forgets it, which only ever lets a
client through, never locks one out. The clock is injectable for tests.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedguard.errors import ConfigError, RateLimitedError

logger = logging.getLogger(__name__)


class RateLimitExceededError(RateLimitedError):
    """A request over its bucket's limit; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"rate limit exceeded; retry after {self.retry_after_seconds} s"
        )

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up, as the ``Retry-After`` header wants."""
        return max(1, math.ceil(self.retry_after))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by string, safe to use from several threads.

    Parameters
    ----------
    capacity:
        Largest burst a key may send at once (> 0).
    refill_per_second:
        Sustained requests per second per key (> 0).
    now:
        Monotonic clock in seconds.
    max_keys:
        Buckets kept at most. When exceeded, full buckets are dropped first (a new
        bucket starts full, so nothing changes for their keys), then the least
        recently used ones.
    """

    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        *,
        now: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if not capacity > 0:
            raise ConfigError(f"rate limit capacity must be > 0; got {capacity}")
        if not refill_per_second > 0:
            raise ConfigError(
                f"rate limit refill_per_second must be > 0; got {refill_per_second}"
            )
        if max_keys < 1:
            raise ConfigError(f"rate limit max_keys must be >= 1; got {max_keys}")
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self._now = now
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket, or raise 429."""
        with self._lock:
            bucket = self._refilled(key)
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return
            wait = (cost - bucket.tokens) / self.refill_per_second

        raise RateLimitExceededError(wait)

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key`` may spend ``cost`` tokens; 0 if it may now.

        Takes nothing from the bucket.
        """
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            bucket = self._refilled(key)
            return max(0.0, (cost - bucket.tokens) / self.refill_per_second)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str) -> _Bucket:
        now = self._now()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._make_room()
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(
                self.capacity, bucket.tokens + elapsed * self.refill_per_second
            )
            bucket.updated = now

        # Re-inserting keeps the dict in least-recently-used order.
        self._buckets[key] = bucket
        return bucket

    def _make_room(self) -> None:
        if len(self._buckets) < self._max_keys:
            return
        now = self._now()
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.refill_per_second
            >= self.capacity
        ]
        for key in full:
            del self._buckets[key]

        excess = len(self._buckets) - self._max_keys + 1
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]

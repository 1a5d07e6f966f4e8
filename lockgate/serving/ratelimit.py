"""Per-key token buckets: one over prompt + completion tokens, one over requests.

A request is admitted while both buckets hold something; its real token count (known only
after the answer) is then taken from the token bucket, which may go below zero. So at most
one request overshoots a budget, and the next waits until the bucket has refilled: the
``Retry-After`` it is told.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``capacity`` units, refilled continuously at ``capacity`` per ``period_s``."""

    capacity: float
    period_s: float = 60.0
    level: float = math.nan
    updated: float = 0.0

    def _refill(self, now: float) -> None:
        if math.isnan(self.level):
            self.level, self.updated = self.capacity, now
            return
        rate = self.capacity / self.period_s
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket holds more than nothing (0 if it does now)."""
        self._refill(now)
        if self.level >= 1.0:
            return 0.0
        return (1.0 - self.level) * self.period_s / self.capacity

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount


@dataclass(frozen=True)
class Admission:
    """Whether a request may go ahead; if not, which budget and when to come back."""

    allowed: bool
    retry_after_s: int = 0
    budget: str = ""


class RateLimiter:
    """Token and request budgets per key name; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenBucket] = {}
        self._requests: dict[str, TokenBucket] = {}

    def _buckets(self, key: str, tokens_per_minute: int, requests_per_minute: int) -> tuple[TokenBucket, TokenBucket]:
        tokens = self._tokens.get(key)
        if tokens is None or tokens.capacity != tokens_per_minute:
            tokens = self._tokens[key] = TokenBucket(float(tokens_per_minute))
        requests = self._requests.get(key)
        if requests is None or requests.capacity != requests_per_minute:
            requests = self._requests[key] = TokenBucket(float(requests_per_minute))
        return tokens, requests

    def admit(self, key: str, tokens_per_minute: int, requests_per_minute: int) -> Admission:
        """Take one request from the request budget if both budgets allow it."""
        with self._lock:
            now = self._clock()
            tokens, requests = self._buckets(key, tokens_per_minute, requests_per_minute)
            for name, bucket in (("tokens per minute", tokens), ("requests per minute", requests)):
                wait = bucket.wait_s(now)
                if wait > 0:
                    return Admission(False, max(1, math.ceil(wait)), name)
            requests.take(1.0, now)
            return Admission(True)

    def charge(self, key: str, tokens: int) -> None:
        """Take a finished request's prompt + completion tokens from its key's token budget."""
        with self._lock:
            bucket = self._tokens.get(key)
            if bucket is not None:
                bucket.take(float(tokens), self._clock())

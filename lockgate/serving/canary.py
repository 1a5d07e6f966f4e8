"""Canary routing and the automatic rollback policy.

Routing is sticky: a subject (a user id, or the API key's digest) hashes to a fixed point in
[0, 1); the canary takes the bottom ``weight`` of that range, so raising its weight only
adds subjects to it and nobody flips back and forth.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lockgate.serving.manifest import ServingManifest, Variant


def subject_point(subject: str) -> float:
    """A stable point in [0, 1) for a subject."""
    head = hashlib.sha256(subject.encode("utf-8")).digest()[:8]
    return int.from_bytes(head, "big") / 2.0**64


def route(manifest: ServingManifest, subject: str) -> Variant:
    """The variant serving this subject."""
    canary = manifest.canary
    if canary is not None and subject_point(subject) < canary.weight:
        return canary
    return manifest.production


@dataclass(frozen=True)
class RollbackPolicy:
    """When a canary is judged unhealthy."""

    window_s: float
    min_requests: int
    max_error_rate: float
    max_p95_ms: float


@dataclass(frozen=True)
class Health:
    requests: int
    errors: int
    p95_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class CanaryMonitor:
    """Recent outcomes per served model, and the policy's verdict on them."""

    def __init__(self, policy: RollbackPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[tuple[float, bool, float]]] = {}

    def observe(self, model_digest: str, ok: bool, latency_ms: float) -> None:
        with self._lock:
            self._seen.setdefault(model_digest, deque()).append((self._clock(), ok, latency_ms))

    def health(self, model_digest: str) -> Health:
        with self._lock:
            seen = self._seen.setdefault(model_digest, deque())
            cutoff = self._clock() - self.policy.window_s
            while seen and seen[0][0] < cutoff:
                seen.popleft()
            rows = list(seen)
        return Health(len(rows), sum(1 for _, ok, _ in rows if not ok), p95([lat for _, _, lat in rows]))

    def verdict(self, model_digest: str) -> str | None:
        """Why this model should be rolled back, or None while it is healthy (or too little is known)."""
        h = self.health(model_digest)
        if h.requests < self.policy.min_requests:
            return None
        if h.error_rate > self.policy.max_error_rate:
            return (
                f"canary error rate {h.error_rate:.1%} over {h.requests} requests in {self.policy.window_s:g}s "
                f"exceeds {self.policy.max_error_rate:.1%}"
            )
        if h.p95_ms > self.policy.max_p95_ms:
            return (
                f"canary p95 latency {h.p95_ms:.0f} ms over {h.requests} requests in {self.policy.window_s:g}s "
                f"exceeds {self.policy.max_p95_ms:.0f} ms"
            )
        return None

    def forget(self, model_digest: str) -> None:
        with self._lock:
            self._seen.pop(model_digest, None)

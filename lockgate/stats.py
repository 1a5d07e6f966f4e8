"""Statistics the gate decides with: paired differences and their bootstrap intervals.

Challenger and champion answer the *same* questions, so the right comparison is the mean
of the per-question differences, not the difference of two means with two intervals: the
pairing removes the question-to-question spread both models share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict


class PairedDifference(BaseModel):
    """Mean per-question difference (challenger minus champion) with a bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float

    @property
    def is_valid(self) -> bool:
        return self.n > 0 and all(math.isfinite(v) for v in (self.mean, self.ci_low, self.ci_high))

    def describe(self) -> str:
        """``+0.123 [+0.050, +0.190] (95%, n=60)`` for people."""
        if not self.is_valid:
            return f"not a number (n={self.n})"
        return f"{self.mean:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] ({self.confidence:.0%}, n={self.n})"


def paired_difference(
    challenger: Sequence[float],
    champion: Sequence[float],
    confidence: float,
    samples: int,
    seed: int,
) -> PairedDifference:
    """Percentile-bootstrap interval of the mean of ``challenger[i] - champion[i]``.

    Any NaN or infinity in either side makes the whole result NaN: a comparison with a
    missing score must never pass. Deterministic for a given seed.

    Raises:
        ValueError: the two sides have different lengths (they are not paired).
    """
    a = np.asarray(challenger, dtype=float)
    b = np.asarray(champion, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.size} vs {b.size}")
    n = int(a.size)
    if n == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return PairedDifference(mean=math.nan, ci_low=math.nan, ci_high=math.nan, n=n, confidence=confidence)
    diffs = a - b
    rng = np.random.default_rng(seed)
    # Resample in blocks so memory stays small however many samples are asked for.
    means = np.empty(samples)
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, samples, block):
        stop = min(samples, start + block)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return PairedDifference(
        mean=float(diffs.mean()),
        ci_low=float(np.quantile(means, tail)),
        ci_high=float(np.quantile(means, 1.0 - tail)),
        n=n,
        confidence=confidence,
    )


def bootstrap_mean(values: Sequence[float], confidence: float, samples: int, seed: int) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its percentile-bootstrap interval at ``confidence``.

    Empty, or any NaN or infinity, is all NaN: a summary of missing scores is never a number.
    Deterministic for a given seed.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return math.nan, math.nan, math.nan
    means = arr[np.random.default_rng(seed).integers(0, arr.size, size=(samples, arr.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(arr.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))

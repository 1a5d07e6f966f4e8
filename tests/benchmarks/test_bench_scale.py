"""The refresh benchmark's scale line: random noise at an exact cosine, and the top-10 overlap
it leaves (a yardstick for the ONNX backend's overlap, so it must itself be right)."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_refresh import noise_floor, top10_overlap, with_noise


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_noise_turns_every_vector_by_exactly_the_cosine_asked_for() -> None:
    vectors = unit_rows(200, 384, 0)
    noisy = with_noise(vectors, 0.99, seed=3)
    assert np.allclose((vectors * noisy).sum(axis=1), 0.99, atol=1e-5)
    assert np.allclose(np.linalg.norm(noisy, axis=1), 1.0, atol=1e-5)


def test_the_overlap_falls_as_the_noise_grows_and_is_whole_without_noise() -> None:
    docs, queries = unit_rows(2000, 64, 1), unit_rows(50, 64, 2)
    assert top10_overlap(docs, docs, queries, queries) == 1.0
    floors = [noise_floor(docs, queries, c) for c in (1.0, 0.999, 0.99, 0.9)]
    assert floors[0] == 1.0
    assert floors == sorted(floors, reverse=True) and floors[-1] < 0.5, floors

"""Drift verdicts: calibrated false alarms and power on real embeddings, and the verdict's speed.

1. Calibration (the project's embedder on the sample questions): the threshold is calibrated on
   250 of them (200 permutations, false-alarm rate 0.01); 20 windows of 50 drawn from the other
   170 should raise at most 1 alarm, and 20 windows with a second topic (cooking questions) mixed
   in at 30% should be found drifted at least 19 times. The baseline, in the same run, is the
   fixed threshold the pipeline used before calibration (MMD 0.01).
2. Speed: the MMD verdict on 10,000 x 384 against 10,000 x 384 embeddings without subsampling
   (target: under 5 s here), against Evidently's own MMD (the whole kernel in memory) on 4,000 a
   side; the calibration and the HTML report (2,000 rows a side) beside it.

    .venv/bin/python -m benchmarks.bench_drift
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lockgate._io import load_jsonl
from lockgate.settings import DriftSettings
from tests.conftest import EXAMPLES

DISHES = [
    "rice", "lentils", "chicken thighs", "salmon", "sourdough", "tomato sauce", "pancakes", "broccoli",
    "roast potatoes", "chickpeas", "tofu", "risotto", "banana bread", "porridge", "boiled eggs", "fresh pasta",
    "carrot soup", "apple pie", "beef stew", "mushrooms",
]  # fmt: skip
ASKING = [
    "How long should I cook {}?", "What goes well with {}?", "Can I freeze {}?",
    "How do I keep {} from burning?", "What oven temperature suits {}?", "How much salt do {} need?",
    "Is it safe to reheat {}?", "How do I store leftover {}?", "Which spices go with {}?",
    "Why did my {} turn out dry?",
]  # fmt: skip


def cooking_questions() -> list[str]:
    """A second topic, nothing like the product's questions: 200 cooking questions."""
    return [template.format(dish) for dish in DISHES for template in ASKING]


def product_questions() -> list[str]:
    """The sample data's questions about the fictional product (examples/data/qa.jsonl)."""
    return [row["instruction"] for row in load_jsonl(EXAMPLES / "data" / "qa.jsonl")]


@dataclass(frozen=True)
class Trial:
    """Alarms raised by 20 same-distribution windows and by 20 windows with the second topic mixed in."""

    false_alarms: int
    detections: int
    windows: int
    threshold: float
    p_values_same: tuple[float, ...]
    p_values_mixed: tuple[float, ...]
    fixed_false_alarms: int
    fixed_detections: int


def calibration_trial(
    product: np.ndarray,
    cooking: np.ndarray,
    settings: DriftSettings,
    windows: int = 20,
    window: int = 50,
    mix: float = 0.3,
    n_reference: int = 250,
    seed: int = 0,
) -> Trial:
    """Calibrate on ``n_reference`` of the product questions' embeddings; judge seeded windows of the
    rest, pure and with ``mix`` of the cooking questions' embeddings."""
    from lockgate.drift import calibrate, detect_drift

    order = np.random.default_rng(seed).permutation(len(product))
    reference, held_out = product[order[:n_reference]], product[order[n_reference:]]
    calibration = calibrate(reference, window, settings, seed=seed)
    fixed = settings.model_copy(update={"calibrate": False})
    off = round(window * mix)
    same, mixed = [], []
    for trial in range(windows):
        rng = np.random.default_rng(1000 + trial)
        pure = held_out[rng.choice(len(held_out), window, replace=False)]
        blend = np.vstack(
            [
                held_out[rng.choice(len(held_out), window - off, replace=False)],
                cooking[rng.choice(len(cooking), off, replace=False)],
            ]
        )
        same.append(
            (detect_drift(reference, pure, settings, calibration=calibration), detect_drift(reference, pure, fixed))
        )
        mixed.append(
            (detect_drift(reference, blend, settings, calibration=calibration), detect_drift(reference, blend, fixed))
        )
    return Trial(
        false_alarms=sum(c.drifted for c, _ in same),
        detections=sum(c.drifted for c, _ in mixed),
        windows=windows,
        threshold=calibration.threshold,
        p_values_same=tuple(c.p_value or 1.0 for c, _ in same),
        p_values_mixed=tuple(c.p_value or 1.0 for c, _ in mixed),
        fixed_false_alarms=sum(f.drifted for _, f in same),
        fixed_detections=sum(f.drifted for _, f in mixed),
    )


def unit_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    rows = rng.normal(size=(n, 384)).astype(np.float32) + shift
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    import pandas as pd

    from lockgate.drift import calibrate, drift_method, drift_score, write_html
    from lockgate.embeddings import SentenceTransformerEmbedder
    from lockgate.settings import DriftSettings

    settings = DriftSettings()
    embedder = SentenceTransformerEmbedder()
    product, cooking = embedder.encode(product_questions()), embedder.encode(cooking_questions())
    print(
        f"drift calibration on MiniLM embeddings of project texts ({settings.method}, false-alarm rate "
        f"{settings.false_alarm_rate}, {settings.resamples} permutations of 250 reference rows); the baseline is "
        f"the fixed threshold {settings.threshold} used before"
    )
    print(f"{'window':>6} {'':34} {'calibrated':>11} {'fixed':>11}")
    for window in (50, 15):
        start = time.perf_counter()
        trial = calibration_trial(product, cooking, settings, window=window)
        n = trial.windows
        print(
            f"{window:>6} {'false alarms, same distribution':34} {trial.false_alarms:>8}/{n} "
            f"{trial.fixed_false_alarms:>8}/{n}"
        )
        print(f"{'':>6} {'detections, 30% second topic':34} {trial.detections:>8}/{n} {trial.fixed_detections:>8}/{n}")
        print(
            f"{'':>6} threshold {trial.threshold:.5f}; p same-distribution median "
            f"{np.median(trial.p_values_same):.2f}, mixed max {max(trial.p_values_mixed):.3f} "
            f"({time.perf_counter() - start:.1f} s)"
        )

    rng = np.random.default_rng(0)
    reference, current = unit_rows(rng, 10_000), unit_rows(rng, 10_000, shift=0.01)
    small_ref, small_cur = reference[:4000], current[:4000]
    evidently = drift_method(settings)
    baseline = timed(lambda: evidently(pd.DataFrame(small_cur), pd.DataFrame(small_ref)))
    ours_small = timed(lambda: drift_score(small_ref, small_cur, settings))
    verdict = timed(lambda: drift_score(reference, current, settings))
    calibration = timed(lambda: calibrate(reference, 1000, settings))
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        html = timed(lambda: write_html(reference[:2000], current[:2000], settings, Path(scratch) / "report.html"))
    print("\nMMD verdict speed (384 dimensions)")
    print(f"  Evidently's MMD, 4,000 a side (baseline)   {baseline:6.2f} s")
    print(f"  blockwise MMD, 4,000 a side               {ours_small:6.2f} s  ({baseline / ours_small:.1f}x faster)")
    print(f"  blockwise MMD, 10,000 a side, every row   {verdict:6.2f} s  (target under 5 s)")
    print(f"  calibration, {settings.resamples} windows of 1,000 from 2,000   {calibration:6.2f} s")
    print(f"  HTML report, 2,000 a side                 {html:6.2f} s")


if __name__ == "__main__":
    main()

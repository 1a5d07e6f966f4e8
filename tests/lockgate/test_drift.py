"""Drift on real MiniLM embeddings of the sample questions (loads the model: a few seconds), its
calibrated threshold, and the blockwise MMD against Evidently's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_drift import calibration_trial, cooking_questions, product_questions, unit_rows
from lockgate._io import load_jsonl
from lockgate.artifacts import LocalArtifactStore
from lockgate.drift import calibrate, commit_calibration, detect_drift, drift_method, mmd2u, p_value
from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.errors import ConfigError, DataError
from lockgate.records import DriftCalibration
from lockgate.settings import DriftSettings
from tests.conftest import EXAMPLES

OFF_DOMAIN = [
    "How do I bake sourdough bread at home?",
    "What is the capital of Peru?",
    "Which football team won the league?",
    "How tall is Mount Everest?",
    "Recommend a good novel about the sea.",
    "What's the weather in Lisbon in May?",
    "How do I change a bicycle tyre?",
    "Who painted the Mona Lisa?",
    "What wine goes with fish?",
    "How many moons does Jupiter have?",
    "When did the Roman empire fall?",
    "How do I knit a scarf?",
]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def questions(embedder: SentenceTransformerEmbedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r["instruction"] for r in load_jsonl(EXAMPLES / "data" / "qa.jsonl")]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    reference = [rows[i] for i in order[:300]]
    current = [rows[i] for i in order[300:360]]
    return embedder.encode(reference), embedder.encode(current), embedder.encode(OFF_DOMAIN * 3)


def test_no_alarm_on_same_distribution(questions) -> None:  # type: ignore[no-untyped-def]
    reference, current, _ = questions
    report = detect_drift(reference, current, DriftSettings())
    assert not report.drifted and report.score < report.threshold
    assert report.p_value is not None and report.p_value > DriftSettings().false_alarm_rate and report.calibration


def test_alarm_on_a_real_shift(questions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reference, current, off = questions
    shifted = np.vstack([current[:30], off[:30]])
    store = LocalArtifactStore(tmp_path)
    report = detect_drift(reference, shifted, DriftSettings(), store=store, dataset_digest="d1")
    assert report.dataset_digest == "d1" and Path(report.html_path or "").parent.parent == tmp_path / "drift"
    assert report.drifted and report.score > report.threshold and report.p_value == 1 / 201
    assert report.html_path and "Drift in embeddings" in Path(report.html_path).read_text()
    kept = DriftCalibration.model_validate_json(
        (store.path_of("drift-calibrations", report.calibration or "") / "calibration.json").read_bytes()
    )
    assert kept.threshold == report.threshold and kept.window == 60 and len(kept.null_scores) == 200


def test_calibration_on_real_embeddings_keeps_false_alarms_rare_and_finds_a_second_topic(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """Issue 17's bar: over 20 seeded same-distribution windows at most 1 alarm; with a second topic
    mixed in at 30%, at least 19 of 20 found (benchmarks/bench_drift.py prints the same trial)."""
    product, cooking = embedder.encode(product_questions()), embedder.encode(cooking_questions())
    trial = calibration_trial(product, cooking, DriftSettings(), window=50)
    assert trial.false_alarms <= 1 and trial.detections >= 19, trial
    assert max(trial.p_values_mixed) <= 0.01 < float(np.median(trial.p_values_same)), trial


def test_the_verdict_is_the_p_value_against_the_false_alarm_rate() -> None:
    rng = np.random.default_rng(3)
    reference = unit_rows(rng, 300)
    settings = DriftSettings(false_alarm_rate=0.05, resamples=99)
    calibration = calibrate(reference, 40, settings)
    assert sum(s > calibration.threshold for s in calibration.null_scores) == 4, "at most 5% of 99 above"
    for shift in (0.0, 0.02, 0.05, 0.1, 0.3):
        report = detect_drift(reference, unit_rows(rng, 40, shift), settings, calibration=calibration)
        assert report.p_value == p_value(calibration, report.score)
        assert report.drifted == (report.p_value <= settings.false_alarm_rate), (shift, report)
    assert detect_drift(reference, unit_rows(rng, 40, 0.3), settings, calibration=calibration).drifted


def test_blockwise_mmd_is_evidentlys_number() -> None:
    rng = np.random.default_rng(5)
    # float64 rows: Evidently then computes its kernel in float64, the reference for ours in float32 blocks
    reference, current = unit_rows(rng, 700).astype(np.float64), unit_rows(rng, 300, 0.02).astype(np.float64)
    theirs, _, _ = drift_method(DriftSettings())(pd.DataFrame(current), pd.DataFrame(reference))
    from lockgate.drift import median_gamma

    ours = mmd2u(reference, current, median_gamma(reference, current))
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-7) and theirs > 0


def test_calibration_is_recorded_by_its_recipe(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    reference = unit_rows(rng, 200)
    first = calibrate(reference, 30, DriftSettings())
    assert first == calibrate(reference, 30, DriftSettings()), "same reference and settings: same calibration"
    assert first.digest != calibrate(reference, 31, DriftSettings()).digest
    path = commit_calibration(first, LocalArtifactStore(tmp_path))
    assert DriftCalibration.model_validate_json((path / "calibration.json").read_bytes()) == first


def test_too_few_rows_are_refused_with_the_counts(questions) -> None:  # type: ignore[no-untyped-def]
    reference, _, _ = questions
    with pytest.raises(DataError, match=r"^drift: 5 current and 300 reference rows are too few .*min_rows=10"):
        detect_drift(reference, reference[:5], DriftSettings())
    with pytest.raises(DataError, match=r"15 current and 20 reference rows"):
        detect_drift(reference[:20], reference[20:35], DriftSettings())
    with pytest.raises(ConfigError, match=r"false_alarm_rate=0\.001 needs at least 999 drift.resamples, not 200"):
        calibrate(reference, 30, DriftSettings(false_alarm_rate=0.001))


def test_calibration_off_decides_at_the_fixed_threshold(questions) -> None:  # type: ignore[no-untyped-def]
    reference, current, _ = questions
    report = detect_drift(reference, current, DriftSettings(calibrate=False, threshold=1e-9))
    assert report.drifted and report.threshold == 1e-9 and report.p_value is None and report.calibration is None


def test_an_alarm_rings_once_per_cooldown_and_per_resource(tmp_path: Path) -> None:
    from lockgate.drift import AlarmBook

    book = AlarmBook(tmp_path / "state" / "drift-alarms.json")
    assert book.ring("lockgate.queries.q.production", 1000.0, 3600) is None, "the first alarm is sent"
    assert book.ring("lockgate.queries.q.production", 1000.0 + 3599, 3600) == 1000.0, "held back in the cooldown"
    assert book.ring("lockgate.queries.q.canary", 1001.0, 3600) is None, "another resource has its own"
    assert AlarmBook(book.path).ring("lockgate.queries.q.production", 1000.0 + 3600, 3600) is None, "kept on disk"
    assert book.last("lockgate.queries.q.production") == 4600.0
    book.path.write_text("{torn")
    assert book.ring("lockgate.queries.q.production", 4601.0, 3600) is None, "an unreadable book rings again"

"""Drift on real MiniLM embeddings of the sample questions (loads the model: a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lockgate._io import load_jsonl
from lockgate.artifacts import LocalArtifactStore
from lockgate.drift import detect_drift
from lockgate.embeddings import SentenceTransformerEmbedder
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
def questions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    embedder = SentenceTransformerEmbedder()
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


def test_alarm_on_a_real_shift(questions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reference, current, off = questions
    shifted = np.vstack([current[:30], off[:30]])
    report = detect_drift(reference, shifted, DriftSettings(), store=LocalArtifactStore(tmp_path), dataset_digest="d1")
    assert report.dataset_digest == "d1" and Path(report.html_path or "").parent.parent == tmp_path / "drift"
    assert report.drifted and report.score > report.threshold
    assert report.html_path and "Drift in embeddings" in Path(report.html_path).read_text()


def test_too_few_rows_is_an_error(questions) -> None:  # type: ignore[no-untyped-def]
    reference, _, _ = questions
    with pytest.raises(ValueError, match="at least 2 rows"):
        detect_drift(reference, reference[:1], DriftSettings())

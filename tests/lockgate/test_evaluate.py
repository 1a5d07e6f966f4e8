from __future__ import annotations

import math

import numpy as np
import pytest

from lockgate.evaluate import Retrieved, question_type, ragas_metrics, ragas_scores, same_answers, summarize
from lockgate.prompts import GROUNDED_QA


def test_summary_mean_and_interval() -> None:
    s = summarize([0.0, 1.0] * 50, samples=500, seed=1)
    assert s.mean == 0.5 and s.ci_low < 0.5 < s.ci_high and s.n == 100 and s.is_valid
    assert summarize([0.0, 1.0] * 50, samples=500, seed=1) == s, "same seed, same interval"


def test_any_nan_poisons_the_summary() -> None:
    s = summarize([0.9, math.nan, 0.8], samples=200, seed=0)
    assert math.isnan(s.mean) and not s.is_valid
    assert not summarize([], samples=200, seed=0).is_valid


def test_question_type_slices() -> None:
    assert question_type("Which port does it use?") == "which"
    assert question_type("  How many? ") == "how"


def test_prompt_version_changes_with_text() -> None:
    other = GROUNDED_QA.__class__(
        name=GROUNDED_QA.name,
        with_context="C: {input} Q: {instruction} A:",
        without_context=GROUNDED_QA.without_context,
    )
    assert other.version != GROUNDED_QA.version and other.version.startswith("grounded-qa@")
    assert GROUNDED_QA.render("Q?", "ctx") == "Context: ctx\nQuestion: Q?\nAnswer:"
    assert GROUNDED_QA.render("Q?") == "Question: Q?\nAnswer:"


def test_same_answers_counts_texts_equal_but_for_surrounding_whitespace() -> None:
    assert same_answers(["Yes.", " 42 \n", "Red"], ["Yes.", "42", "red"]) == 2
    with pytest.raises(ValueError):
        same_answers(["a"], ["a", "b"])  # answers of different question lists are never compared


class CountingEmbedder:
    """MiniLM, counting the texts of each encode call."""

    def __init__(self) -> None:
        from lockgate.embeddings import SentenceTransformerEmbedder

        self.inner = SentenceTransformerEmbedder()
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.encode(texts)


def test_semantic_similarity_is_the_cosine_of_the_stage_embedder_encoded_in_one_batch() -> None:
    """Ragas's semantic similarity embeds with the stage's embedder, every reference and answer of
    a scoring run in one batch (not two single-text encodes per row in threads)."""
    references = ["The Sorter listens on port 7070.", "Ownership moves with the Relay.", "Blue."]
    answers = ["Port 7070.", "", "The Relay owns it."]
    items = [Retrieved(f"q{k}", ref, ref, [ref], {}) for k, ref in enumerate(references)]
    embedder = CountingEmbedder()
    metrics = ragas_metrics(embedder)  # type: ignore[arg-type]
    scores = ragas_scores(items, answers, metrics, ("semantic_similarity",))["semantic_similarity"]

    assert embedder.calls == [6], "one batch of every reference and answer (an empty answer as ' ')"
    vectors = embedder.inner.encode([*references, *(a or " " for a in answers)])
    expected = [float(vectors[k] @ vectors[k + 3]) for k in range(3)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(scores, 3))) == 3  # three different pairs, three different scores

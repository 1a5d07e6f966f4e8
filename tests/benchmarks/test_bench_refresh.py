"""The refresh benchmark's yardsticks: retrieval metrics, and labelled sets whose labels are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.bench_refresh import (
    EXAMPLES,
    LabelledSet,
    retrieval_quality,
    sample_eval_set,
    top10,
    write_labelled_corpus,
)
from lockgate.corpus import load_corpus


def test_hit_at_k_and_mrr_count_the_first_relevant_rank() -> None:
    # Three questions over 12 chunks: relevant at rank 1, at rank 3, and not in the top 10.
    relevant = np.zeros((3, 12), dtype=bool)
    relevant[0, 4] = relevant[1, 7] = relevant[1, 8] = relevant[2, 11] = True
    ranked = np.array([[4, 0, 1, 2, 3, 5, 6, 7, 8, 9], [0, 1, 8, 7, 2, 3, 4, 5, 6, 9], list(range(10))])
    quality = retrieval_quality(ranked, relevant)
    assert quality.hit1 == 1 / 3
    assert quality.hit5 == 2 / 3
    assert np.isclose(quality.mrr10, (1 + 1 / 3 + 0) / 3)


def test_top10_is_the_ten_nearest_best_first() -> None:
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(50, 16)).astype(np.float32)
    chunks /= np.linalg.norm(chunks, axis=1, keepdims=True)
    queries = chunks[[3, 17]] + 0.01
    ranked = top10(queries, chunks)
    assert ranked.shape == (2, 10) and list(ranked[:, 0]) == [3, 17]
    assert (ranked == np.argsort(-(queries @ chunks.T), axis=1)[:, :10]).all()


def test_every_generated_question_is_answered_by_exactly_one_chunk_that_it_does_not_quote(tmp_path: Path) -> None:
    questions = write_labelled_corpus(tmp_path / "labelled", 40)
    labelled = LabelledSet("generated", load_corpus(tmp_path / "labelled"), questions)
    assert len(questions) == 200
    assert (labelled.relevant().sum(axis=1) == 1).all()
    # Paraphrased: the question is not a sentence of its passage, and several components share each word.
    assert not any(q.question.rstrip("?") in (q.passage or "") for q in questions)
    names = [c.title for c in labelled.chunks if " / " not in c.title and not c.title.startswith("Release")]
    assert len({n.split()[0] for n in names}) < len(names) and len({n.split()[1] for n in names}) < len(names)


def test_the_sample_eval_set_is_the_eval_split_with_sources_in_the_sample_corpus() -> None:
    questions = sample_eval_set()
    docs = {p.name for p in (EXAMPLES / "corpus").glob("*.md")}
    assert 20 < len(questions) < 120
    assert {q.doc for q in questions} <= docs

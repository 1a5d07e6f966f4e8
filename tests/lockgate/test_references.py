"""Reference embeddings kept with what was promoted: computed once per questions and embedder,
loaded afterwards, another embedder's kept apart, and one changed on disk refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lockgate.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.corpus import Chunk
from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.errors import DataError
from lockgate.references import corpus_reference_texts, corpus_texts, keep_corpus_reference, reference_vectors
from lockgate.settings import load_settings
from lockgate.signing import TamperedError, open_signing

QUESTIONS = [f"How do I reset relay {n} in zone {n % 7}?" for n in range(12)]


class Counting:
    """The real embedder, counting the texts it is asked to encode; ``tag`` stands for other weights."""

    def __init__(self, inner: SentenceTransformerEmbedder, tag: str = "") -> None:
        self.inner, self.tag, self.encoded = inner, tag, 0
        self.name, self.dim = inner.name, inner.dim

    @property
    def identity(self) -> str:
        return self.inner.identity + self.tag

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return self.inner.encode(texts)

    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self.inner.tokenizer()


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


def test_a_reference_is_embedded_once_and_loaded_after(
    store: ArtifactStore, minilm: SentenceTransformerEmbedder
) -> None:
    embedder = Counting(minilm)
    first = reference_vectors(QUESTIONS, embedder, store)  # type: ignore[arg-type]
    assert first.computed and embedder.encoded == len(QUESTIONS)
    again = reference_vectors(QUESTIONS, embedder, store)  # type: ignore[arg-type]
    assert not again.computed and embedder.encoded == len(QUESTIONS), "the kept vectors were loaded"
    np.testing.assert_array_equal(again.vectors, first.vectors)
    meta = json.loads((again.path / "reference.json").read_text())
    assert meta["embedder"] == minilm.identity and meta["rows"] == len(QUESTIONS)

    other = Counting(minilm, tag="-other-weights")
    apart = reference_vectors(QUESTIONS, other, store)  # type: ignore[arg-type]
    assert apart.computed and apart.path != first.path, "another embedder's vectors are kept apart"
    fewer = reference_vectors(QUESTIONS[:-1], embedder, store)  # type: ignore[arg-type]
    assert fewer.computed and fewer.vectors.shape == (len(QUESTIONS) - 1, minilm.dim)


def test_a_reference_changed_on_disk_is_refused(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    signing = open_signing(load_settings().signing)  # the suite's throw-away key pair (tests/conftest.py)
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    kept = reference_vectors(QUESTIONS, minilm, store, signing)
    assert reference_vectors(QUESTIONS, minilm, store, signing).computed is False
    shifted = kept.vectors.copy()
    shifted[0] = -shifted[0]
    np.save(kept.path / "vectors.npy", shifted, allow_pickle=False)
    with pytest.raises(TamperedError, match=r"vectors\.npy"):
        reference_vectors(QUESTIONS, minilm, store, signing)


def chunk(n: int) -> Chunk:
    return Chunk(f"doc{n}#0", f"doc{n}.md", f"Relay {n}", f"Relay {n} listens on port {7000 + n}.")


def test_a_corpus_sample_does_not_depend_on_file_order_and_is_kept_per_collection(
    store: ArtifactStore, tmp_path: Path
) -> None:
    chunks = [chunk(n) for n in range(30)]
    sample = corpus_texts(chunks, cap=10)
    assert len(sample) == 10 and corpus_texts(chunks[::-1], cap=10) == sample, "the same corpus, the same sample"
    assert all(": Relay " in text for text in sample), "the text the embedder sees, title included"
    book = tmp_path / "home" / "index" / "corpus-reference.json"
    keep_corpus_reference(sample, store, book, "docs__blue")
    keep_corpus_reference(corpus_texts(chunks[:5]), store, book, "docs__green")
    assert corpus_reference_texts(book, "docs__blue", store) == sample
    assert len(corpus_reference_texts(book, "docs__green", store)) == 5, "each generation keeps its own"
    with pytest.raises(DataError, match=r"no corpus reference for collection docs__red.*flows refresh"):
        corpus_reference_texts(book, "docs__red", store)


def test_a_corpus_reference_changed_on_disk_is_refused(tmp_path: Path) -> None:
    signing = open_signing(load_settings().signing)
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    book = tmp_path / "index" / "corpus-reference.json"
    kept = keep_corpus_reference(corpus_texts([chunk(n) for n in range(8)]), store, book, "docs__blue")
    assert len(corpus_reference_texts(book, "docs__blue", store, signing)) == 8
    (kept / "texts.jsonl").write_text(json.dumps("a cooking recipe") + "\n", encoding="utf-8")
    with pytest.raises(TamperedError, match=r"texts\.jsonl"):
        corpus_reference_texts(book, "docs__blue", store, signing)

"""Reference embeddings kept with what was promoted: computed once per questions and embedder,
loaded afterwards, another embedder's kept apart, and one changed on disk refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lockgate.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.references import reference_vectors
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

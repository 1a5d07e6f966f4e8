from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from lockgate.corpus import Chunk, load_corpus, split_markdown
from lockgate.errors import DataError
from lockgate.refresh import apply_refresh, refresh_plan, vector_digest
from lockgate.vectorstore import MilvusStore
from tests.conftest import EXAMPLES

DOC = "# Widget\n\nThe widget spins.\n\n## Power\n\nIt uses 5 volts. It draws 1 amp.\n"


def test_split_markdown_titles_paragraphs_and_stable_ids() -> None:
    chunks = split_markdown("w.md", DOC, max_chars=600)
    assert [(c.title, c.text) for c in chunks] == [
        ("Widget", "The widget spins."),
        ("Widget / Power", "It uses 5 volts. It draws 1 amp."),
    ]
    again = split_markdown("w.md", DOC.replace("5 volts", "6 volts"), max_chars=600)
    assert [c.chunk_id for c in again] == [c.chunk_id for c in chunks]
    assert again[1].content_digest != chunks[1].content_digest


def test_long_paragraphs_are_cut_at_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    pieces = split_markdown("d.md", text, max_chars=120)
    assert all(len(c.text) <= 120 for c in pieces) and len(pieces) > 3
    assert " ".join(c.text for c in pieces) == text


def test_plan_adds_updates_deletes_and_counts_unchanged() -> None:
    a, b, c = (Chunk(f"id{i}", "d.md", "", f"text {i}") for i in range(3))
    stored = {"id0": vector_digest(a, "m"), "id1": "sha256:old", "gone": "sha256:x"}
    plan = refresh_plan([a, b, c], stored, "m")
    assert [x.chunk_id for x in plan.to_add] == ["id2"]
    assert [x.chunk_id for x in plan.to_update] == ["id1"]
    assert plan.to_delete == ["gone"] and plan.unchanged == 1
    assert refresh_plan([a], {"id0": vector_digest(a, "m")}, "m").is_noop
    assert [x.chunk_id for x in refresh_plan([a], {"id0": vector_digest(a, "m")}, "other-model").to_update] == ["id0"]


def test_corpus_errors_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "missing", 600)
    with pytest.raises(DataError, match="holds no documents"):
        load_corpus(tmp_path, 600)
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match=r"bad\.md: not UTF-8"):
        load_corpus(tmp_path, 600)


class HashEmbedder:
    """Deterministic bag-of-words vectors: enough to test the store without loading a model."""

    name = "hash-test"
    dim = 32

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class UnusableEmbedder:
    """Fails if a refresh touches the model at all."""

    name = "hash-test"

    @property
    def dim(self) -> int:
        raise AssertionError("the embedder was loaded")

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the embedder was called")


def test_refresh_is_incremental_idempotent_and_exact_on_milvus_lite(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name in ("relay", "planner", "ledger"):
        (corpus / f"{name}.md").write_text((EXAMPLES / "corpus" / f"{name}.md").read_text())
    uri = str(tmp_path / "index" / "m.db")
    emb = HashEmbedder()
    vs = MilvusStore(uri, "t")

    first = apply_refresh(load_corpus(corpus, 600), vs, emb, store, uri, "t")
    assert first.added == first.total == 12 and emb.calls == [12]

    again = apply_refresh(load_corpus(corpus, 600), vs, UnusableEmbedder(), store, uri, "t")
    assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 12)
    assert again.digest == first.digest, "a re-run embeds nothing and needs no model"

    relay = corpus / "relay.md"
    relay.write_text(relay.read_text().replace("by default", "unless told otherwise"))
    (corpus / "ledger.md").unlink()
    changed = apply_refresh(load_corpus(corpus, 600), vs, emb, store, uri, "t")
    assert (changed.added, changed.updated, changed.deleted) == (0, 1, 4)
    assert emb.calls[-1] == 1

    chunks = load_corpus(corpus, 600)
    assert vs.manifest() == {c.chunk_id: vector_digest(c, emb.name) for c in chunks}, "the index equals the corpus"

    other = HashEmbedder()
    other.name = "another-model"
    switched = apply_refresh(chunks, vs, other, store, uri, "t")
    assert switched.updated == len(chunks) and other.calls == [len(chunks)], "a new model re-embeds everything"
    vs.close()
    reopened = MilvusStore(uri, "t")
    reopened.ensure_collection(emb.dim)
    hits = reopened.search(emb.encode(["listens on port unless told otherwise closes connections idle"]), 1)
    assert hits[0][0].doc == "relay.md" and "unless told otherwise" in hits[0][0].text

"""Reference embeddings: the vectors of the questions a model was judged on, kept with it.

Drift compares current questions with a reference: production's training questions. Their
vectors are computed once per (questions, embedder) and kept in the artifact store as
``references/<address>`` with the embedder's identity, the questions' digest and the questions
themselves. The release keeps the new production model's reference when it promotes it
(``tasks.release.keep_reference``), so every later check (query drift each hour, the next
release's drift stage, ``drift calibrate``) loads the vectors instead of embedding the same
questions again. Another embedder (a new backend or new weights) has another identity and so
gets a reference of its own; vectors from one embedder are never compared with another's.

An index generation keeps a corpus reference the same way: a sample of the chunk texts it was
built from (``corpus-references/<address>``, at most ``CORPUS_ROWS``, picked by content digest so
the sample does not depend on file order), named per physical collection in the state folder's
``index/corpus-reference.json``. Corpus drift compares the corpus about to be indexed with the
reference of the collection that serves.

A kept reference is a signed artifact like the others: with ``signing`` it is verified before
use, and one changed on disk is refused (``TamperedError``), never silently trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lockgate._io import atomic_write_text
from lockgate.artifacts import ArtifactStore
from lockgate.corpus import Chunk
from lockgate.digest import digest_json
from lockgate.embeddings import Embedder
from lockgate.errors import DataError
from lockgate.signing import ArtifactSigning, verify_artifact

__all__ = [
    "CORPUS_BOOK",
    "CORPUS_REFERENCE_KIND",
    "CORPUS_ROWS",
    "REFERENCE_KIND",
    "Reference",
    "corpus_reference_texts",
    "corpus_texts",
    "keep_corpus_reference",
    "reference_vectors",
]

REFERENCE_KIND = "references"
CORPUS_REFERENCE_KIND = "corpus-references"
# Enough chunks for a calibrated verdict, few enough that a check embeds them in seconds.
CORPUS_ROWS = 2000
# Relative to the state folder: which corpus reference each physical collection was built from.
CORPUS_BOOK = Path("index") / "corpus-reference.json"


@dataclass(frozen=True)
class Reference:
    """A reference's vectors and where they are kept; ``computed`` is False when they were loaded."""

    vectors: np.ndarray
    path: Path
    computed: bool


def reference_vectors(
    texts: list[str], embedder: Embedder, store: ArtifactStore, signing: ArtifactSigning | None = None
) -> Reference:
    """The vectors of ``texts`` under ``embedder``: loaded when kept before, else encoded and kept.

    Raises:
        TamperedError: the kept reference was changed after it was signed.
    """
    texts_digest = digest_json(texts)
    address = digest_json({"texts": texts_digest, "embedder": embedder.identity})
    path = store.path_of(REFERENCE_KIND, address)
    if (path / "vectors.npy").is_file():
        if signing is not None:
            verify_artifact(signing, path)
        vectors = np.load(path / "vectors.npy", allow_pickle=False)
        if vectors.shape == (len(texts), embedder.dim):
            return Reference(vectors, path, computed=False)
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    staged = store.staging(REFERENCE_KIND)
    np.save(staged / "vectors.npy", vectors, allow_pickle=False)
    (staged / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    meta = {"texts": texts_digest, "embedder": embedder.identity, "embedder_name": embedder.name, "rows": len(texts)}
    (staged / "reference.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    _, kept = store.commit(REFERENCE_KIND, staged, address)
    return Reference(vectors, kept, computed=True)


def corpus_texts(chunks: list[Chunk], cap: int = CORPUS_ROWS) -> list[str]:
    """What corpus drift compares: the embedded text of at most ``cap`` chunks, picked by content
    digest (the same corpus gives the same sample whatever the order of its files)."""
    ordered = sorted(chunks, key=lambda c: c.content_digest)
    return [c.embed_text for c in ordered[:cap]]


def keep_corpus_reference(texts: list[str], store: ArtifactStore, book: Path, collection: str) -> Path:
    """Keep ``texts`` as the corpus reference of the physical ``collection`` (signed like every
    artifact) and note it in ``book``. Returns where the texts are kept."""
    staged = store.staging(CORPUS_REFERENCE_KIND)
    (staged / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    (staged / "reference.json").write_text(json.dumps({"rows": len(texts)}), encoding="utf-8")
    _, kept = store.commit(CORPUS_REFERENCE_KIND, staged, digest_json(texts))
    entries = _book(book)
    entries[collection] = str(kept)
    book.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(book, json.dumps(entries, indent=1, sort_keys=True))
    return kept


def corpus_reference_texts(
    book: Path, collection: str, store: ArtifactStore, signing: ArtifactSigning | None = None
) -> list[str]:
    """The corpus reference of the physical ``collection``, verified when signing is on.

    Raises:
        DataError: no reference was kept for it (the index was built before references were kept).
        TamperedError: the kept texts were changed after they were signed.
    """
    kept = _book(book).get(collection)
    if kept is None:
        raise DataError(
            f"{book}: no corpus reference for collection {collection}; run `python -m flows refresh` once to keep one"
        )
    path = store.locate(kept)
    if signing is not None:
        verify_artifact(signing, Path(path))
    lines = (Path(path) / "texts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _book(book: Path) -> dict[str, str]:
    if not book.is_file():
        return {}
    try:
        entries = json.loads(book.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{book}: not valid JSON ({exc}); delete it and refresh the index to keep a new one") from exc
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}

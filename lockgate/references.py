"""Reference embeddings: the vectors of the questions a model was judged on, kept with it.

Drift compares current questions with a reference: production's training questions. Their
vectors are computed once per (questions, embedder) and kept in the artifact store as
``references/<address>`` with the embedder's identity, the questions' digest and the questions
themselves. The release keeps the new production model's reference when it promotes it
(``tasks.release.keep_reference``), so every later check (query drift each hour, the next
release's drift stage, ``drift calibrate``) loads the vectors instead of embedding the same
questions again. Another embedder (a new backend or new weights) has another identity and so
gets a reference of its own; vectors from one embedder are never compared with another's.

A kept reference is a signed artifact like the others: with ``signing`` it is verified before
use, and one changed on disk is refused (``TamperedError``), never silently trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_json
from lockgate.embeddings import Embedder
from lockgate.signing import ArtifactSigning, verify_artifact

__all__ = ["REFERENCE_KIND", "Reference", "reference_vectors"]

REFERENCE_KIND = "references"


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

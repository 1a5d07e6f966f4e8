"""Incremental, idempotent embedding refresh: embed only what changed, delete what vanished."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lockgate.corpus import Chunk
from lockgate.digest import digest_json
from lockgate.embeddings import Embedder
from lockgate.records import IndexBuild
from lockgate.store import LocalArtifactStore
from lockgate.vectorstore import StoredChunk, VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh must do to make the index equal the corpus."""

    to_add: list[Chunk]
    to_update: list[Chunk]
    to_delete: list[str]
    unchanged: int

    @property
    def is_noop(self) -> bool:
        return not (self.to_add or self.to_update or self.to_delete)


def vector_digest(chunk: Chunk, embedder_name: str) -> str:
    """Identity of a stored vector: the chunk's content and the model that embedded it.

    Switching the embedding model changes every vector digest, so the next refresh
    re-embeds the whole corpus instead of mixing vectors of two models.
    """
    return digest_json([embedder_name, chunk.content_digest])


def refresh_plan(chunks: list[Chunk], stored: dict[str, str], embedder_name: str) -> RefreshPlan:
    """Compare the corpus with the store's ``chunk_id -> vector_digest`` manifest."""
    current = {c.chunk_id: c for c in chunks}
    if len(current) != len(chunks):
        raise ValueError("duplicate chunk ids in corpus")
    add = [c for cid, c in current.items() if cid not in stored]
    update = [c for cid, c in current.items() if cid in stored and stored[cid] != vector_digest(c, embedder_name)]
    delete = sorted(cid for cid in stored if cid not in current)
    unchanged = len(current) - len(add) - len(update)
    return RefreshPlan(add, update, delete, unchanged)


def apply_refresh(
    chunks: list[Chunk],
    store: VectorStore,
    embedder: Embedder,
    artifacts: LocalArtifactStore,
    uri: str,
    collection: str,
) -> IndexBuild:
    """Bring the vector store in line with ``chunks`` and record the build.

    The embedder is only touched when something changed, so a no-op refresh loads no model.
    """
    plan = refresh_plan(chunks, store.manifest(), embedder.name)
    changed = plan.to_add + plan.to_update
    log.info(
        "refresh plan: +%d ~%d -%d =%d", len(plan.to_add), len(plan.to_update), len(plan.to_delete), plan.unchanged
    )
    if changed:
        store.ensure_collection(embedder.dim)
        vectors = embedder.encode([c.embed_text for c in changed])
        store.upsert(
            [StoredChunk(c.chunk_id, vector_digest(c, embedder.name), c.doc, c.title, c.text) for c in changed],
            vectors,
        )
    if plan.to_delete:
        store.delete(plan.to_delete)
    manifest = {c.chunk_id: vector_digest(c, embedder.name) for c in chunks}
    digest = digest_json({"embedder": embedder.name, "manifest": manifest})
    staged = artifacts.staging("index")
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    _, path = artifacts.commit("indexes", staged, digest)
    return IndexBuild(
        digest=digest,
        parents=(digest_json(sorted(manifest.values())),),
        uri=uri,
        collection=collection,
        embedder=embedder.name,
        manifest_path=str(Path(path) / "manifest.json"),
        added=len(plan.to_add),
        updated=len(plan.to_update),
        deleted=len(plan.to_delete),
        unchanged=plan.unchanged,
        total=len(chunks),
    )

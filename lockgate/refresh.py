"""Incremental, idempotent embedding refresh: embed only what changed, delete what vanished.

The store is the source of truth: every refresh plans against what the store holds, writes in
batches, and records in its manifest only what the store acknowledged. A refresh that dies at
any point (a failed write, a killed process) leaves the store consistent per chunk, and the
next refresh finishes the job: after it, the store holds exactly one vector per current chunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lockgate.artifacts import ArtifactStore
from lockgate.corpus import Chunk
from lockgate.digest import digest_json
from lockgate.embeddings import Embedder, StreamingEmbedder
from lockgate.errors import ConfigError
from lockgate.records import IndexBuild
from lockgate.stores import StoredChunk, VectorStore
from lockgate.stores.aliases import AliasMove, Generation, IndexAliases, physical_collection

log = logging.getLogger(__name__)
T = TypeVar("T")

# Chunks embedded and written per step: a crash loses at most one step's embedding work.
REFRESH_BATCH = 256

# Encodes batches of texts, yielding each batch's vectors in the order given (as they are ready):
# in this process by default, or spread over a cluster (the task layer's Dask encoder).
BatchEncoder = Callable[[list[list[str]]], Iterator[np.ndarray]]


@dataclass(frozen=True)
class ScaleOut:
    """Where large plans are embedded: ``encode`` for plans of at least ``min_chunks`` chunks."""

    encode: BatchEncoder
    min_chunks: int
    name: str = "cluster"


def encode_here(embedder: Embedder) -> BatchEncoder:
    """Encode batch after batch in this process; an embedder that streams (ONNX Runtime's) runs the
    next batches while the refresh writes one."""
    if isinstance(embedder, StreamingEmbedder):
        return embedder.encode_batches

    def encode(batches: list[list[str]]) -> Iterator[np.ndarray]:
        for texts in batches:
            yield embedder.encode(texts)

    return encode


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh must do to make the index equal the corpus."""

    to_add: list[Chunk]
    to_update: list[Chunk]
    to_delete: list[str]
    unchanged: int
    stored: int

    @property
    def is_noop(self) -> bool:
        return not (self.to_add or self.to_update or self.to_delete)


def vector_digest(chunk: Chunk, embedder_id: str) -> str:
    """Identity of a stored vector: the chunk's content and the embedder that embedded it.

    Switching the embedder (other weights or configuration) changes every vector digest, so
    the next refresh re-embeds the whole corpus instead of mixing vectors of two models.
    """
    return digest_json([embedder_id, chunk.content_digest])


def refresh_plan(chunks: list[Chunk], stored: dict[str, str], embedder_id: str) -> RefreshPlan:
    """Compare the corpus with the store's ``chunk_id -> vector_digest`` manifest."""
    current = {c.chunk_id: c for c in chunks}
    if len(current) != len(chunks):
        raise ValueError("duplicate chunk ids in corpus")
    add = [c for cid, c in current.items() if cid not in stored]
    update = [c for cid, c in current.items() if cid in stored and stored[cid] != vector_digest(c, embedder_id)]
    delete = sorted(cid for cid in stored if cid not in current)
    unchanged = len(current) - len(add) - len(update)
    return RefreshPlan(add, update, delete, unchanged, len(stored))


def check_deletes(plan: RefreshPlan, collection: str, max_share: float, force: bool) -> None:
    """Refuse a plan that deletes more than ``max_share`` of the stored vectors, unless forced.

    A corpus folder pointed at the wrong place (a subfolder, an empty checkout) looks like every
    other document was deleted; the numbers in the message say how much would go.

    Raises:
        ConfigError: the plan deletes too much and ``force`` is not set.
    """
    if force or not plan.to_delete or plan.stored == 0:
        return
    share = len(plan.to_delete) / plan.stored
    if share > max_share:
        current = plan.unchanged + len(plan.to_add) + len(plan.to_update)
        raise ConfigError(
            f"refresh refused: it would delete {len(plan.to_delete)} of the {plan.stored} vectors in "
            f"collection {collection!r} ({share:.0%}, over vector_store.max_delete_share {max_share:.0%}) "
            f"and keep {plan.unchanged}, adding {len(plan.to_add)}; the corpus has {current} chunks. "
            "Check data.corpus_dir, or force the refresh (--force) if the documents really are gone"
        )


class InlineWriter:
    """Runs each write at once, in the caller's thread; the executor interface of ``writer_for``."""

    def __enter__(self) -> InlineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:
            done.set_exception(exc)
        return done


def writer_for(store: VectorStore) -> ThreadPoolExecutor | InlineWriter:
    """Where a refresh's writes run: one write in flight while the next batch is embedded, where
    a write waits on a server (its round trips overlap the encoding); in line, between batches,
    where the store does the work in this process (Milvus Lite: ``writes_in_process``). Such a
    write needs the CPU the encoder uses on every core; run beside it, it slowed both (2 cores,
    onnx-int8 splitting each run over both cores, 7,881 chunks, three runs each: a full refresh took
    1.14x a raw encode beside it, 1.07x in line). A streaming embedder (``StreamingEmbedder``) goes
    on with the runs of the next batches during a write in line."""
    if getattr(store, "writes_in_process", False):
        return InlineWriter()
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-write")


def apply_refresh(
    chunks: list[Chunk],
    store: VectorStore,
    embedder: Embedder,
    artifacts: ArtifactStore,
    uri: str,
    collection: str,
    *,
    max_delete_share: float = 0.5,
    force: bool = False,
    batch: int = REFRESH_BATCH,
    scale_out: ScaleOut | None = None,
) -> IndexBuild:
    """Bring the vector store in line with ``chunks`` and record the build.

    Changed chunks are embedded and upserted ``batch`` at a time, then vanished ones deleted.
    The embedder is only touched when something changed, so a no-op refresh loads no model.
    A plan of at least ``scale_out.min_chunks`` changed chunks is embedded by ``scale_out.encode``
    (a cluster); each batch is still written as soon as its vectors arrive, in order.

    Raises:
        ConfigError: the plan deletes more than ``max_delete_share`` of the index (unless ``force``).
        TransientError: a write did not land; what did land is kept and the next run goes on.
    """
    embedder_id = embedder.identity
    stored = store.manifest()
    plan = refresh_plan(chunks, stored, embedder_id)
    log.info(
        "refresh plan for %r: +%d ~%d -%d =%d",
        collection,
        len(plan.to_add),
        len(plan.to_update),
        len(plan.to_delete),
        plan.unchanged,
    )
    check_deletes(plan, collection, max_delete_share, force)
    acknowledged = dict(stored)
    # By length, as sentence-transformers orders one encode call: batches of similar lengths pad
    # less, so the refresh embeds about as fast as one encode of everything (the order of the
    # writes does not matter: the store's manifest is the record).
    changed = sorted(plan.to_add + plan.to_update, key=lambda c: len(c.embed_text))
    batches = [changed[start : start + batch] for start in range(0, len(changed), batch)]
    encode = encode_here(embedder)
    if scale_out is not None and len(changed) >= scale_out.min_chunks:
        log.info("embedding %d chunks in %d batches on %s", len(changed), len(batches), scale_out.name)
        encode = scale_out.encode

    def write(rows: list[StoredChunk], vectors: np.ndarray) -> list[StoredChunk]:
        store.upsert(rows, vectors)
        return rows

    pending: Future[list[StoredChunk]] | None = None
    # Creating the collection is mostly waiting on the store (Milvus polls until it is loaded, about
    # 0.5 s): it runs while the first batch is embedded, and the first write waits for it.
    setup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-collection")
    ready: Future[None] | None = setup.submit(store.ensure_collection, embedder.dim) if changed else None
    try:
        # A batch counts once its write returned.
        with writer_for(store) as writer:
            encoded = encode([[c.embed_text for c in part] for part in batches])
            for part, vectors in zip(batches, encoded, strict=True):
                rows = [
                    StoredChunk(c.chunk_id, vector_digest(c, embedder_id), c.doc, c.title, c.text, embedder_id)
                    for c in part
                ]
                if ready is not None:
                    ready.result()
                    ready = None
                if pending is not None:
                    acknowledged.update((r.chunk_id, r.content_digest) for r in pending.result())
                pending = writer.submit(write, rows, vectors)
        if pending is not None:
            acknowledged.update((r.chunk_id, r.content_digest) for r in pending.result())
            pending = None
        for start in range(0, len(plan.to_delete), batch):
            ids = plan.to_delete[start : start + batch]
            store.delete(ids)
            for cid in ids:
                acknowledged.pop(cid, None)
        store.flush()
    except Exception:
        if ready is not None and ready.done() and ready.exception() is not None:
            raise  # the collection could not be made (another embedder's dimension): nothing was written
        # The executor waited for the write in flight; if it landed, it counts.
        if pending is not None and pending.done() and pending.exception() is None:
            acknowledged.update((r.chunk_id, r.content_digest) for r in pending.result())
        landed = sum(1 for c in changed if acknowledged.get(c.chunk_id) == vector_digest(c, embedder_id))
        gone = sum(1 for cid in plan.to_delete if cid not in acknowledged)
        log.warning(
            "refresh of %r stopped after %d of %d writes and %d of %d deletes landed; the next run goes on from there",
            collection,
            landed,
            len(changed),
            gone,
            len(plan.to_delete),
        )
        raise
    finally:
        setup.shutdown(wait=True, cancel_futures=True)
    manifest = dict(sorted(acknowledged.items()))
    digest = digest_json({"embedder": embedder_id, "manifest": manifest})
    staged = artifacts.staging("index")
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    _, path = artifacts.commit("indexes", staged, digest)
    return IndexBuild(
        digest=digest,
        parents=(digest_json(sorted(manifest.values())),),
        uri=store.uri or uri,
        collection=collection,
        embedder=embedder.name,
        manifest_path=str(Path(path) / "manifest.json"),
        added=len(plan.to_add),
        updated=len(plan.to_update),
        deleted=len(plan.to_delete),
        unchanged=plan.unchanged,
        total=len(manifest),
    )


def refresh_generation(
    chunks: list[Chunk],
    open_collection: Callable[[str], VectorStore],
    embedder: Embedder,
    artifacts: ArtifactStore,
    aliases: IndexAliases,
    collection: str,
    uri: str,
    *,
    switch: bool = True,
    max_delete_share: float = 0.5,
    force: bool = False,
    scale_out: ScaleOut | None = None,
) -> tuple[IndexBuild, AliasMove | None]:
    """Blue/green refresh: bring the embedder's own collection up to date, then record it.

    Each embedder (by identity) has its own physical collection, so a new embedder builds beside
    the serving one. Only a complete build is recorded; the serving alias moves to it when
    ``switch`` is set (or when nothing serves yet), and the one it replaces stays for rollback.

    Args:
        open_collection: opens the store for a physical collection name (and is closed here).
        collection: the logical collection (``vector_store.collection``).
    """
    physical = physical_collection(collection, embedder.identity)
    store = open_collection(physical)
    try:
        build = apply_refresh(
            chunks,
            store,
            embedder,
            artifacts,
            uri,
            physical,
            max_delete_share=max_delete_share,
            force=force,
            scale_out=scale_out,
        )
    finally:
        store.close()
    generation = Generation(
        collection=physical,
        embedder=embedder.identity,
        embedder_name=embedder.name,
        build_digest=build.digest,
        vectors=build.total,
        built_at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )
    move = aliases.record(collection, generation, switch=switch)
    if move is not None:
        point_store_alias(open_collection, collection, move.current)
        log.info("index %r now serves %s (was %s)", collection, move.current, move.previous)
    return build, move


def switch_after_gates(
    open_collection: Callable[[str], VectorStore],
    aliases: IndexAliases,
    collection: str,
    evaluated: str,
    passed: bool,
) -> AliasMove | None:
    """``vector_store.switch: after_gates``: the generation a release was evaluated with serves only
    if that release passed every gate (evaluation and drift included); otherwise what served stays.

    Returns:
        The move, or ``None`` when the gates failed or ``evaluated`` already serves.
    """
    serving = aliases.serving(collection)
    if serving == evaluated:
        return None
    if not passed:
        log.info(
            "index %r keeps serving %s: the release evaluated with %s did not pass", collection, serving, evaluated
        )
        return None
    move = aliases.switch(collection, to=evaluated, reason="a release evaluated with it passed the gates")
    point_store_alias(open_collection, collection, move.current)
    log.info("index %r now serves %s (was %s)", collection, move.current, move.previous)
    return move


def point_store_alias(open_collection: Callable[[str], VectorStore], collection: str, physical: str) -> None:
    """Where the store has aliases (Milvus), make the logical name read the serving generation.

    Readers of a store without aliases (Pinecone namespaces) look the serving one up with
    ``lockgate.stores.aliases.serving_collection``.
    """
    store = open_collection(physical)
    try:
        point = getattr(store, "point_alias", None)
        if point is not None:
            point(collection)
    finally:
        store.close()

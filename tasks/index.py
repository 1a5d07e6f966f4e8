"""The embedding refresh task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lockgate.corpus import Chunk, ChunkCache, TokenChunking, load_corpus
from lockgate.embeddings import Embedder
from lockgate.prep import pii_rules
from lockgate.records import IndexBuild
from lockgate.references import CORPUS_BOOK, corpus_texts, keep_corpus_reference
from lockgate.refresh import refresh_generation, switch_after_gates
from lockgate.settings import DataSettings, EmbeddingSettings, VectorStoreSettings
from lockgate.stores import VectorStore, open_store
from lockgate.stores.aliases import home_aliases
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, embedder_of, retry_transient
from tasks.scaleout import dask_scale_out


@task(
    name="refresh-index",
    cache_policy=DEFAULT_BUT_WORKSPACE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
)
def refresh_index(
    *,
    corpus_dir: str,
    data: DataSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    workspace: Workspace,
    force: bool = False,
) -> IndexBuild:
    """Chunk the corpus, embed what changed, upsert it and delete what disappeared.

    The embedder's own collection of ``workspace.index_uri`` is refreshed (blue/green: a new
    embedder builds beside the serving one); the state folder's ``index/aliases.json`` records
    which collection serves. ``force`` lets a refresh delete more than
    ``vector_store.max_delete_share`` of the index.
    """
    logger = get_run_logger()
    embedder = embedder_of(embeddings, workspace.exported_models)
    chunks = corpus_chunks(corpus_dir, data, embeddings, embedder, workspace)
    build, move = refresh_generation(
        chunks,
        _opener(vector_store, workspace.index_uri),
        embedder,
        workspace.artifacts,
        home_aliases(workspace.home),
        vector_store.collection,
        workspace.index_uri,
        switch=vector_store.switch == "auto",  # after_gates: the release flow switches once the gates pass
        max_delete_share=vector_store.max_delete_share,
        force=force,
        scale_out=dask_scale_out(embeddings, workspace.exported_models),
    )
    if move is not None:
        logger.info("index %s now serves %s (was %s)", vector_store.collection, move.current, move.previous)
    logger.info(
        "index %s: +%d ~%d -%d =%d (total %d)",
        build.collection,
        build.added,
        build.updated,
        build.deleted,
        build.unchanged,
        build.total,
    )
    # What corpus drift compares the next corpus with: a sample of this build's chunks.
    kept = keep_corpus_reference(
        corpus_texts(chunks), workspace.artifacts, workspace.home / CORPUS_BOOK, build.collection
    )
    create_markdown_artifact(
        key="index-build",
        markdown="\n".join(
            [
                "# Embedding refresh",
                "",
                "| added | updated | deleted | unchanged | total |",
                "|---|---|---|---|---|",
                f"| {build.added} | {build.updated} | {build.deleted} | {build.unchanged} | {build.total} |",
                "",
                f"- store: `{build.uri}` collection `{build.collection}`",
                f"- embedder: {build.embedder}",
                f"- manifest: `{build.manifest_path}` (`{build.digest}`)",
                f"- corpus reference (what corpus drift compares with): `{kept}`",
            ]
        ),
        description="What the refresh changed in the vector store",
    )
    return build


def corpus_chunks(
    corpus_dir: str, data: DataSettings, embeddings: EmbeddingSettings, embedder: Embedder, workspace: Workspace
) -> list[Chunk]:
    """The corpus as the index holds it: redacted with the training rows' PII rules, chunked in the
    embedder's own tokens (so none is cut off at its input limit), through the state folder's chunk
    cache (an unchanged document's chunks are reused, so an edit costs its own chunking only)."""
    tokens = TokenChunking(embedder.tokenizer(), embeddings.chunk_tokens, embeddings.chunk_overlap_tokens)
    cache = ChunkCache(workspace.home / "index" / "chunk-cache.json")
    chunks = load_corpus(Path(corpus_dir), pii=pii_rules(data), tokens=tokens, cache=cache)
    get_run_logger().info("chunks: %d documents reused from the chunk cache, %d chunked", cache.hits, cache.misses)
    return chunks


@task(name="switch-index", cache_policy=DEFAULT_BUT_WORKSPACE)
def switch_index_after_gates(
    *, vector_store: VectorStoreSettings, evaluated: str, passed: bool, workspace: Workspace
) -> str | None:
    """With ``vector_store.switch: after_gates``, serve the index generation the release was evaluated
    with once the release passed its gates. Returns the collection now serving, if it moved."""
    move = switch_after_gates(
        _opener(vector_store, workspace.index_uri),
        home_aliases(workspace.home),
        vector_store.collection,
        evaluated,
        passed,
    )
    logger = get_run_logger()
    if move is not None:
        logger.info("index %s now serves %s (was %s)", vector_store.collection, move.current, move.previous)
        return move.current
    if not passed:
        logger.info("index %s: the new build %s waits (the release did not pass)", vector_store.collection, evaluated)
    return None


def _opener(vector_store: VectorStoreSettings, vector_uri: str) -> Callable[[str], VectorStore]:
    """Opens the store for one physical collection (a blue/green generation)."""
    return lambda physical: open_store(vector_store.backend, vector_uri, physical, vector_store)

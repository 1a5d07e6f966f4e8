"""The embedding refresh task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lockgate.artifacts import LocalArtifactStore
from lockgate.corpus import TokenChunking, load_corpus
from lockgate.prep import pii_rules
from lockgate.records import IndexBuild
from lockgate.refresh import refresh_generation, switch_after_gates
from lockgate.settings import DataSettings, EmbeddingSettings, VectorStoreSettings
from lockgate.stores import VectorStore, open_store
from lockgate.stores.aliases import IndexAliases, home_aliases
from tasks.common import embedder_of, retry_transient
from tasks.scaleout import dask_scale_out


@task(name="refresh-index", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def refresh_index(
    corpus_dir: str,
    data: DataSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    vector_uri: str,
    artifacts_root: str,
    force: bool = False,
    aliases_path: str | None = None,
) -> IndexBuild:
    """Chunk the corpus, embed what changed, upsert it and delete what disappeared.

    The embedder's own collection is refreshed (blue/green: a new embedder builds beside the
    serving one); ``aliases_path`` (default ``<artifacts_root>/../index/aliases.json``) records
    which collection serves. ``force`` lets a refresh delete more than
    ``vector_store.max_delete_share`` of the index.
    """
    logger = get_run_logger()
    # The corpus is redacted with the same rules as the training rows before anything is embedded.
    embedder = embedder_of(embeddings, artifacts_root)
    # Chunks are measured in the embedder's own tokens, so none is cut off at its input limit.
    tokens = TokenChunking(embedder.tokenizer(), embeddings.chunk_tokens, embeddings.chunk_overlap_tokens)
    chunks = load_corpus(Path(corpus_dir), pii=pii_rules(data), tokens=tokens)
    aliases = _aliases(artifacts_root, aliases_path)
    build, move = refresh_generation(
        chunks,
        _opener(vector_store, vector_uri),
        embedder,
        LocalArtifactStore(Path(artifacts_root)),
        aliases,
        vector_store.collection,
        vector_uri,
        switch=vector_store.switch == "auto",  # after_gates: the release flow switches once the gates pass
        max_delete_share=vector_store.max_delete_share,
        force=force,
        scale_out=dask_scale_out(embeddings, artifacts_root),
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
            ]
        ),
        description="What the refresh changed in the vector store",
    )
    return build


@task(name="switch-index")
def switch_index_after_gates(
    vector_store: VectorStoreSettings,
    vector_uri: str,
    artifacts_root: str,
    evaluated: str,
    passed: bool,
    aliases_path: str | None = None,
) -> str | None:
    """With ``vector_store.switch: after_gates``, serve the index generation the release was evaluated
    with once the release passed its gates. Returns the collection now serving, if it moved."""
    move = switch_after_gates(
        _opener(vector_store, vector_uri),
        _aliases(artifacts_root, aliases_path),
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


def _aliases(artifacts_root: str, aliases_path: str | None) -> IndexAliases:
    # The state folder holds the artifacts: <home>/artifacts, <home>/index/aliases.json.
    return IndexAliases(Path(aliases_path)) if aliases_path else home_aliases(Path(artifacts_root).parent)


def _opener(vector_store: VectorStoreSettings, vector_uri: str) -> Callable[[str], VectorStore]:
    """Opens the store for one physical collection (a blue/green generation)."""
    return lambda physical: open_store(vector_store.backend, vector_uri, physical, vector_store)

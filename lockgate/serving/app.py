"""The gateway the settings describe, built at the edge (``lockgate serve``).

The orchestrator's event emitter is passed in, so serving never imports Prefect.
"""

from __future__ import annotations

from lockgate.serving.canary import CanaryMonitor, RollbackPolicy
from lockgate.serving.gateway import Gateway, GatewayOptions
from lockgate.serving.keys import KeyStore
from lockgate.serving.manifest import ManifestWatcher
from lockgate.serving.rollout import Emitter, roll_back_canary
from lockgate.settings import LockgateSettings, ServingSettings
from lockgate.workspace import Workspace


def rollback_policy(s: ServingSettings) -> RollbackPolicy:
    """The canary rollback rules the ``serving.rollback_*`` settings set."""
    return RollbackPolicy(
        window_s=s.rollback_window_s,
        min_requests=s.rollback_min_requests,
        max_error_rate=s.rollback_max_error_rate,
        max_p95_ms=s.rollback_max_p95_ms,
    )


def build_gateway(settings: LockgateSettings, emit: Emitter) -> Gateway:
    """The gateway the settings describe: manifest, hashed keys, the index retriever, the registry for rollback.

    Raises:
        ConfigError: no manifest yet, or a bad key file.
    """
    # Imported here: the embedder and the vector stores are heavy, and only a running gateway needs them.
    from lockgate.embeddings import Embedder, SentenceTransformerEmbedder
    from lockgate.serving.retrieval import IndexRetriever, PromptBook
    from lockgate.stores import VectorStore, open_store

    s = settings.serving
    workspace = Workspace.open(settings)
    where = workspace.serving
    registry = workspace.registry
    prompts = workspace.prompts(settings.prompts.name)
    embedder: Embedder = SentenceTransformerEmbedder(settings.embeddings.model, settings.embeddings.batch_size)  # type: ignore[assignment]
    store_settings = settings.vector_store

    def store_for(uri: str, collection: str) -> VectorStore:
        return open_store(store_settings.backend, uri, collection, store_settings)

    retriever = IndexRetriever(embedder, store_for, s.top_k)
    book = PromptBook(settings.resolve(settings.prompts.dir), workspace.registry_root, workspace.signing)
    return Gateway(
        manifests=ManifestWatcher(where.manifest, lock_folder=where.folder),  # the deploys' lock
        keys=KeyStore.load(where.keys),
        retriever=retriever,
        render=book.render,
        monitor=CanaryMonitor(rollback_policy(s)),
        on_rollback=lambda manifest, reason: roll_back_canary(manifest, registry, emit, reason, prompts),
        options=GatewayOptions(
            max_tokens=s.max_tokens,
            max_body_bytes=s.max_body_bytes,
            request_timeout_s=s.request_timeout_s,
            query_log=where.query_log,
            feedback_log=where.feedback_log,
        ),
    )

"""Serving: vLLM engines behind the Lockgate gateway (API keys, token budgets, RAG, canary, rollback).

``build_gateway`` wires the pieces from settings at the edge; the orchestrator's event emitter
is injected, so nothing here imports Prefect.
"""

from __future__ import annotations

from pathlib import Path

from lockgate.serving.canary import CanaryMonitor, RollbackPolicy, route, subject_point
from lockgate.serving.gateway import GATEWAY_MODEL, VARIANT_HEADER, Gateway, GatewayOptions
from lockgate.serving.keys import ApiKey, KeyStore, add_key, key_digest
from lockgate.serving.manifest import ManifestWatcher, ServingManifest, Variant, load_manifest, write_manifest
from lockgate.serving.ratelimit import RateLimiter
from lockgate.serving.rollout import CANARY_ROLLED_BACK, Emitter, roll_back_canary
from lockgate.settings import LockgateSettings, ServingSettings
from lockgate.workspace import ServingPaths

__all__ = [
    "CANARY_ROLLED_BACK",
    "GATEWAY_MODEL",
    "VARIANT_HEADER",
    "ApiKey",
    "CanaryMonitor",
    "Emitter",
    "Gateway",
    "GatewayOptions",
    "KeyStore",
    "ManifestWatcher",
    "RateLimiter",
    "RollbackPolicy",
    "ServingManifest",
    "Variant",
    "add_key",
    "build_gateway",
    "key_digest",
    "load_manifest",
    "paths",
    "roll_back_canary",
    "rollback_policy",
    "route",
    "subject_point",
    "write_manifest",
]


def paths(settings: LockgateSettings) -> ServingPaths:
    return ServingPaths(settings)


def rollback_policy(s: ServingSettings) -> RollbackPolicy:
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
    from lockgate.embeddings import Embedder, SentenceTransformerEmbedder
    from lockgate.registry import open_registry
    from lockgate.registry.prompts import open_prompt_registry
    from lockgate.serving.retrieval import IndexRetriever, PromptBook
    from lockgate.stores import VectorStore, open_store

    s = settings.serving
    where = paths(settings)
    registry = open_registry(settings.registry, Path(settings.registry_dir))
    prompts = open_prompt_registry(settings.registry, Path(settings.registry_dir), settings.prompts.name)
    embedder: Embedder = SentenceTransformerEmbedder(settings.embeddings.model, settings.embeddings.batch_size)  # type: ignore[assignment]
    store_settings = settings.vector_store

    def store_for(uri: str, collection: str) -> VectorStore:
        return open_store(store_settings.backend, uri, collection, store_settings)

    retriever = IndexRetriever(embedder, store_for, s.top_k)
    prompts_dir = settings.resolve(getattr(getattr(settings, "prompts", None), "dir", "prompts"))
    book = PromptBook(prompts_dir, Path(settings.registry_dir))
    return Gateway(
        manifests=ManifestWatcher(where.manifest),
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

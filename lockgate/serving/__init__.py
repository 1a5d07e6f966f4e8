"""Serving: vLLM engines behind the Lockgate gateway (API keys, token budgets, RAG, canary, rollback).

Where things live: ``app`` builds the gateway from settings; ``gateway`` has its routes, auth,
budgets and canary bookkeeping; ``openai`` the request and response shapes; ``upstream`` the
client to the engines and what each of its errors means; ``metrics`` the Prometheus metrics;
``keys``, ``ratelimit``, ``canary``, ``manifest`` and ``retrieval`` the pieces a request meets;
``rollout``, ``deploy``, ``vllm`` and ``bench`` what a deploy starts, serves and rolls back.

May import: the rest of ``lockgate`` (settings, workspace, registry, stores, embeddings, pii),
starlette, aiohttp and prometheus_client. Never Prefect, ``tasks`` or ``flows``: the
orchestrator's event emitter is passed in (``build_gateway(settings, emit)``).
"""

from __future__ import annotations

from lockgate.serving.app import build_gateway, rollback_policy
from lockgate.serving.canary import CanaryMonitor, RollbackPolicy, route, subject_point
from lockgate.serving.gateway import VARIANT_HEADER, Gateway, GatewayOptions
from lockgate.serving.keys import ApiKey, KeyStore, add_key, key_digest
from lockgate.serving.manifest import ManifestWatcher, ServingManifest, Variant, load_manifest, write_manifest
from lockgate.serving.openai import GATEWAY_MODEL
from lockgate.serving.ratelimit import RateLimiter
from lockgate.serving.rollout import CANARY_ROLLED_BACK, Emitter, roll_back_canary

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
    "roll_back_canary",
    "rollback_policy",
    "route",
    "subject_point",
    "write_manifest",
]

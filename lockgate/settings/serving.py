"""The ``serving`` area: vLLM engines behind the Lockgate gateway."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lockgate.settings.base import Area


class ServingSettings(Area):
    """Serving: vLLM engines behind the Lockgate gateway (API keys, rate limits, RAG, canary)."""

    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8300, ge=1, le=65535, description="Port the gateway listens on.")
    manifest: str = Field(default="", description="The serving manifest; empty: <home>/serving/manifest.json.")
    keys_file: str = Field(default="", description="Hashed API keys; empty: <home>/serving/keys.json.")
    query_log: str = Field(default="", description="Query log (JSONL); empty: <home>/serving/queries.jsonl.")
    engine: Literal["local", "external"] = Field(
        default="local",
        description="'local': the deploy flow starts vLLM here from the serving environment; 'external': vLLM "
        "runs elsewhere (a Kubernetes Deployment) at engine_url and the deploy flow only smoke-tests and switches.",
    )
    engine_url: str = Field(default="", description="engine 'external': vLLM's base URL (http://host:port).")
    vllm_python: str = Field(
        default=".venv-serving/bin/python", description="engine 'local': the serving environment's python."
    )
    engine_port: int = Field(default=8400, ge=1, le=65535, description="engine 'local': first port tried for vLLM.")
    max_model_len: int = Field(default=512, ge=64, le=1_048_576, description="vLLM's context length, in tokens.")
    max_lora_rank: int = Field(default=16, ge=1, le=512, description="Largest LoRA rank vLLM accepts.")
    kv_cache_gib: int = Field(default=1, ge=1, le=1024, description="engine 'local' on CPU: KV cache size.")
    start_timeout_s: int = Field(default=240, ge=10, le=3600, description="Wait this long for vLLM to be healthy.")
    drain_s: float = Field(
        default=30.0, ge=0.0, le=3600, description="After a switch, old engines live this long for in-flight requests."
    )
    deploy_wait_s: float = Field(
        default=900.0,
        ge=0.0,
        le=86400,
        description="A deploy waits this long for another deploy of the same state folder to finish, then fails.",
    )
    request_timeout_s: float = Field(default=60.0, gt=0.0, le=3600, description="Upstream request timeout.")
    max_tokens: int = Field(default=64, ge=1, le=65536, description="Completion length when a request names none.")
    max_body_bytes: int = Field(default=65536, ge=1024, description="Larger request bodies are refused (413).")
    top_k: int = Field(default=1, ge=0, le=20, description="Chunks retrieved per question (0: no retrieval).")
    tokens_per_minute: int = Field(default=20000, ge=1, description="Default per-key prompt+completion tokens.")
    requests_per_minute: int = Field(default=600, ge=1, description="Default per-key request budget.")
    canary_weight: float = Field(default=0.1, ge=0.0, le=0.5, description="Share of traffic a new model gets first.")
    auto_deploy: bool = Field(
        default=True,
        description="A promotion (lockgate.model.promoted, through the deploy deployment's trigger) serves the new "
        "production model. Off: that run logs one line and starts nothing; `deploy` on the command line still deploys.",
    )
    rollback_window_s: float = Field(default=60.0, gt=0.0, description="Canary health is judged over this window.")
    rollback_min_requests: int = Field(default=20, ge=1, description="Judge the canary only after this many requests.")
    rollback_max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="Roll back above this error rate.")
    rollback_max_p95_ms: float = Field(default=5000.0, gt=0.0, description="Roll back above this p95 latency.")

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {
            "host",
            "port",
            "manifest",
            "keys_file",
            "query_log",
            "engine_url",
            "vllm_python",
            "engine_port",
            "auto_deploy",
            "deploy_wait_s",
        }
    )

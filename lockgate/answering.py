"""Answering the eval questions: on the engine that will serve the model, or on transformers.

An evaluation says how a model answers. The truest measure is the engine that will serve it:
vLLM, with the model's own kernels (a quantized model on its compressed ones), every question
in one batch, greedy as the gateway's default request. Where the serving environment is not
installed, transformers answers, batched with left padding (the tokens a model attends to are
the same as one question at a time; only the padding around them differs).

``evaluation.engine`` picks one: ``auto`` is vLLM where ``evaluation.vllm_python`` exists.
The engine's name is part of every answer's cache key and of the report: answers from two
engines are never mixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from lockgate.digest import digest_bytes
from lockgate.errors import ConfigError, StageError, TransientError
from lockgate.settings import EvaluationSettings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class Answerer(Protocol):
    """Greedy answers of one model to prompt texts (already wrapped in the model's chat template)."""

    @property
    def name(self) -> str:
        """``vllm`` or ``transformers``: part of every answer's cache key."""
        ...

    def answer(
        self, model_path: str, texts: Sequence[str], max_new_tokens: int, progress: Progress | None
    ) -> list[str]:
        """One answer per text, in order."""
        ...


class TransformersAnswerer:
    """transformers ``generate``, ``batch_size`` prompts at a time, padded on the left."""

    name = "transformers"

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size = batch_size

    def answer(
        self, model_path: str, texts: Sequence[str], max_new_tokens: int, progress: Progress | None
    ) -> list[str]:
        import torch

        from lockgate.hf import load_causal_lm

        model, tok = load_causal_lm(model_path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        answers: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                enc = tok(batch, return_tensors="pt", padding=True)
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id,
                )
                width = enc["input_ids"].shape[1]
                answers += [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]
                if progress:
                    progress(len(answers), len(texts))
        return answers


class VllmAnswerer:
    """A vLLM engine per model, started from the serving environment, asked in batches, stopped after."""

    name = "vllm"
    served_name = "eval"

    def __init__(
        self,
        python: str,
        logs: Path,
        *,
        max_model_len: int = 1024,
        batch_size: int = 32,
        start_timeout_s: float = 240.0,
        request_timeout_s: float = 600.0,
    ) -> None:
        self.python = python
        self.logs = logs
        self.max_model_len = max_model_len
        self.batch_size = batch_size
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s

    def answer(
        self, model_path: str, texts: Sequence[str], max_new_tokens: int, progress: Progress | None
    ) -> list[str]:
        from lockgate.serving.vllm import EngineSpec, free_port, start_engine, stop_engine

        spec = EngineSpec(model_path=model_path, served_model=self.served_name)
        log_path = self.logs / f"eval-vllm-{digest_bytes(model_path.encode())[7:19]}.log"
        engine = start_engine(
            self.python, spec, free_port(8600), self.max_model_len, 8, 1, log_path, timeout_s=self.start_timeout_s
        )
        answers: list[str] = []
        try:
            with httpx.Client(timeout=self.request_timeout_s) as client:
                for start in range(0, len(texts), self.batch_size):
                    batch = list(texts[start : start + self.batch_size])
                    answers += self._complete(client, engine.url, batch, max_new_tokens)
                    if progress:
                        progress(len(answers), len(texts))
        finally:
            stop_engine(engine.pid)
        return answers

    def _complete(self, client: httpx.Client, url: str, batch: list[str], max_new_tokens: int) -> list[str]:
        body = {"model": self.served_name, "prompt": batch, "max_tokens": max_new_tokens, "temperature": 0.0}
        try:
            reply = client.post(f"{url}/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise TransientError(f"evaluation on vLLM: the engine at {url} did not answer: {exc}") from None
        if reply.status_code != 200:
            raise StageError(f"evaluation on vLLM: {url} answered {reply.status_code}: {reply.text[:300]}")
        choices: list[dict[str, Any]] = sorted(reply.json().get("choices", []), key=lambda c: int(c["index"]))
        if len(choices) != len(batch):
            raise StageError(f"evaluation on vLLM: asked {len(batch)} completions, got {len(choices)}")
        return [str(c.get("text", "")).strip() for c in choices]


def open_answerer(settings: EvaluationSettings, logs: Path) -> Answerer:
    """The answerer ``evaluation.engine`` names (``auto``: vLLM where the serving environment is).

    Raises:
        ConfigError: ``engine`` is ``vllm`` and the serving environment is missing.
    """
    if settings.engine == "transformers":
        return TransformersAnswerer(settings.batch_size)
    from lockgate.serving.vllm import find_serving_python

    python = find_serving_python(settings.vllm_python)
    if python is not None:
        return VllmAnswerer(str(python), logs)
    if settings.engine == "vllm":
        raise ConfigError(
            f"evaluation.vllm_python: {settings.vllm_python} does not exist; build the serving environment "
            "(make setup) "
            "or set evaluation.engine to transformers or auto"
        )
    return TransformersAnswerer(settings.batch_size)

"""Merge a LoRA adapter into its base and quantize the result with llm-compressor.

The output is a compressed-tensors checkpoint: transformers loads it (decompressing on the
fly) and vLLM serves it natively. ``check_quantized`` then measures whether it is really
smaller, not much worse (eval loss on the answer tokens), and how fast it answers. Speed is
only meaningful where the model is served: transformers decompresses the weights, so with
``quantization.serving_benchmark`` the check also measures both models' tokens/s and latency
through vLLM (the serving environment), under the same load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate._io import load_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.chat import PLAIN_TEXT, ChatFormat, chat_format_of
from lockgate.digest import digest_json, digest_tree
from lockgate.errors import ConfigError, StageError
from lockgate.hf import load_causal_lm
from lockgate.prompts import GROUNDED_QA, PromptTemplate
from lockgate.records import AdapterArtifact, BaseModelArtifact, QuantCheck, QuantizedModel
from lockgate.settings import QuantizationSettings

log = logging.getLogger(__name__)


def merge_adapter(base: BaseModelArtifact, adapter: AdapterArtifact, out: Path) -> Path:
    """Fold the LoRA weights into the base model and save a plain checkpoint."""
    from peft import PeftModel

    model, tok = load_causal_lm(base.path, base.revision)
    merged = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def calibration_rows(
    rows: list[dict[str, str]], prompt: PromptTemplate = GROUNDED_QA, chat: ChatFormat = PLAIN_TEXT
) -> list[str]:
    """Calibration text: prompts with their answers, as the model will see them (in its chat template)."""
    return [chat.wrap(prompt.render(r["instruction"], r.get("context", ""))) + " " + r["output"] for r in rows]


def quantize_checkpoint(merged_dir: Path, out: Path, texts: list[str], settings: QuantizationSettings) -> Path:
    """Quantize a merged checkpoint with llm-compressor and save it compressed."""
    from datasets import Dataset
    from llmcompressor import oneshot  # type: ignore[attr-defined]

    model, tok = load_causal_lm(str(merged_dir))
    recipe = _recipe(settings)
    samples = texts[: settings.calibration_samples]
    enc = tok(samples, truncation=True, max_length=settings.max_seq_length)
    calib = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    with _cpu_awq_workaround(settings):
        oneshot(
            model=model,
            dataset=calib,
            recipe=recipe,
            max_seq_length=settings.max_seq_length,
            num_calibration_samples=len(samples),
        )
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # oneshot leaves a device map of "cpu" on the model, where it was loaded and where it is
        # saved from; transformers takes that for offloading and warns about memory (a CI run's
        # only warning). A map naming "disk" still warns.
        if "disk" not in getattr(model, "hf_device_map", {}).values():
            warnings.filterwarnings("ignore", "Attempting to save a model with offloaded modules", UserWarning)
        model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def _cpu_awq_workaround(settings: QuantizationSettings) -> Iterator[None]:
    """llm-compressor 0.14's AWQ pins its cached activations for faster host-to-device copies;
    torch without an accelerator refuses to pin ("Cannot access accelerator device"). On such a
    machine pinning buys nothing, so AWQ runs with it switched off; everywhere else, unchanged."""
    import torch

    if settings.method != "awq" or torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    pin = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = pin  # type: ignore[method-assign]


def _recipe(settings: QuantizationSettings) -> Any:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    ignore = ["lm_head"]
    if settings.method == "gptq" and settings.group_size is not None:
        # A model whose widths are not multiples of the preset's group of 128 (SmolLM2: 576) is
        # quantized with the same scheme in smaller groups.
        bits = 4 if settings.scheme == "W4A16" else 8
        weights = {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "group"}
        groups = {"group_0": {"targets": ["Linear"], "weights": {**weights, "group_size": settings.group_size}}}
        return GPTQModifier(config_groups=groups, ignore=ignore)
    if settings.method == "gptq":
        return GPTQModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)
    if settings.method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        return [AWQModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)]  # type: ignore[no-untyped-call]
    return QuantizationModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)


def answer_loss(
    model: Any,
    tok: Any,
    rows: list[dict[str, str]],
    prompt: PromptTemplate = GROUNDED_QA,
    chat: ChatFormat = PLAIN_TEXT,
) -> float:
    """Mean cross-entropy (nats/token) of the reference answers given their prompts."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for r in rows:
            p_ids = tok(chat.wrap(prompt.render(r["instruction"], r.get("context", ""))))["input_ids"]
            a_ids = tok(r["output"])["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([p_ids + a_ids])
            labels = torch.tensor([[-100] * len(p_ids) + a_ids])
            loss = model(input_ids=ids, labels=labels).loss
            total += float(loss) * len(a_ids)
            count += len(a_ids)
    return total / max(count, 1)


def forward_latency_ms(model: Any, tok: Any, texts: list[str], repeats: int = 3) -> float:
    """Median time of one forward pass over a prompt, in milliseconds."""
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            for t in texts:
                ids = tok(t, return_tensors="pt")["input_ids"]
                start = time.perf_counter()
                model(input_ids=ids)
                times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2]


def weights_size(path: Path) -> int:
    """Bytes of the weight files in a checkpoint folder."""
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


# The stored folder of a quantized model: the served checkpoint, the merged one it was made from, and
# what made it. ``QuantizedModel.path`` is the first; ``merged_beside`` finds the second from it.
QUANTIZED_DIR, MERGED_DIR, QUANTIZED_META = "model", "merged", "lockgate-quantized.json"


def merged_beside(model_path: Path) -> Path | None:
    """The merged (un-quantized) checkpoint kept beside a quantized model's folder, or None for any
    other model, or if it is gone."""
    stored = model_path.parent
    if model_path.name != QUANTIZED_DIR or not (stored / QUANTIZED_META).is_file():
        return None
    merged = stored / MERGED_DIR
    return merged if (merged / "config.json").is_file() else None


def quantize_adapter(
    base: BaseModelArtifact,
    adapter: AdapterArtifact,
    train_path: Path,
    settings: QuantizationSettings,
    store: ArtifactStore,
) -> QuantizedModel:
    """Merge, quantize and store; the merged checkpoint is kept beside for comparison."""
    staged = store.staging("quantized")
    merged = merge_adapter(base, adapter, staged / MERGED_DIR)
    texts = calibration_rows(load_jsonl(train_path), chat=chat_format_of(merged))
    quantize_checkpoint(merged, staged / QUANTIZED_DIR, texts, settings)
    digest = digest_tree(staged / QUANTIZED_DIR)
    meta = {"adapter_digest": adapter.digest, "method": settings.method, "scheme": settings.scheme}
    (staged / QUANTIZED_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _, path = store.commit("quantized", staged, digest)
    return QuantizedModel(
        digest=digest,
        parents=(adapter.digest,),
        path=str(path / QUANTIZED_DIR),
        merged_path=str(path / MERGED_DIR),
        method=settings.method,
        scheme=settings.scheme,
        adapter_digest=adapter.digest,
        size_bytes=weights_size(path / QUANTIZED_DIR),
        merged_size_bytes=weights_size(path / MERGED_DIR),
    )


@dataclass(frozen=True)
class ServingComparison:
    """The merged and the quantized model's speed through vLLM, or why it was not measured."""

    serving: str  # "vllm", or "not measured: <why>"
    merged: Any = None  # lockgate.serving.bench.ServedSpeed
    quantized: Any = None
    reasons: tuple[str, ...] = ()  # a model vLLM could not serve


def serving_python(settings: QuantizationSettings) -> Path | None:
    """The serving environment's python, or None where the benchmark is off or (``auto``) it is missing.

    Raises:
        ConfigError: ``serving_benchmark`` is ``vllm`` and the serving environment is missing.
    """
    if settings.serving_benchmark == "off":
        return None
    from lockgate.serving.vllm import find_serving_python

    python = find_serving_python(settings.vllm_python)
    if python is not None:
        return python
    if settings.serving_benchmark == "vllm":
        raise ConfigError(
            f"quantization.vllm_python: {settings.vllm_python} does not exist; build the serving environment "
            "(make setup) "
            "or set quantization.serving_benchmark to auto or off"
        )
    return None


def compare_served(
    merged_dir: Path, quant_dir: Path, prompts: list[str], settings: QuantizationSettings, logs: Path | None = None
) -> ServingComparison:
    """Serve each checkpoint in turn with vLLM and put the same load on both.

    A checkpoint vLLM cannot serve is a reason, not an exception: the gate says why it failed.
    """
    if settings.serving_benchmark == "off":
        return ServingComparison("not measured: quantization.serving_benchmark is off")
    python = serving_python(settings)
    if python is None:
        return ServingComparison(f"not measured: no serving environment ({settings.vllm_python} is missing)")
    from lockgate.serving.bench import BenchLoad, bench_checkpoint
    from lockgate.serving.vllm import cannot_run_here

    why = cannot_run_here(str(python), str(quant_dir))
    if why is not None:  # the hardware, not the model: deploy serves the merged model beside it here
        log.warning("serving benchmark: not measured: %s", why)
        return ServingComparison(f"not measured: {why}")

    load = BenchLoad(
        prompts=tuple(prompts),
        requests=settings.bench_requests,
        concurrency=settings.bench_concurrency,
        max_tokens=settings.bench_max_tokens,
    )
    logs = logs or Path(tempfile.mkdtemp(prefix="lockgate-quant-bench-"))
    speeds: dict[str, Any] = {}
    reasons = []
    for name, path in (("merged", merged_dir), ("quantized", quant_dir)):
        try:
            speeds[name] = bench_checkpoint(str(python), str(path), load, logs / f"{name}-vllm.log")
        except StageError as exc:
            reasons.append(f"vLLM could not serve the {name} model: {exc}")
    log.info("serving benchmark (vLLM): %s", {k: round(v.tokens_per_s, 1) for k, v in speeds.items()})
    return ServingComparison("vllm", speeds.get("merged"), speeds.get("quantized"), tuple(reasons))


def serving_reasons(served: ServingComparison, settings: QuantizationSettings) -> list[str]:
    """Why the served speed rejects the quantized model (nothing where it was not measured)."""
    reasons = list(served.reasons)
    if served.merged is None or served.quantized is None or settings.min_serving_speedup <= 0:
        return reasons
    speedup = served.quantized.tokens_per_s / max(served.merged.tokens_per_s, 1e-9)
    if speedup < settings.min_serving_speedup:
        reasons.append(
            f"served speed-up x{speedup:.2f} ({served.quantized.tokens_per_s:.0f} vs "
            f"{served.merged.tokens_per_s:.0f} tokens/s in vLLM) < quantization.min_serving_speedup "
            f"{settings.min_serving_speedup}"
        )
    return reasons


def check_quantized(
    qm: QuantizedModel, eval_rows: list[dict[str, str]], settings: QuantizationSettings, logs: Path | None = None
) -> QuantCheck:
    """Reload the quantized checkpoint and compare it with the merged one (and, where set, in vLLM)."""
    reasons: list[str] = []
    # The verdict depends on the model, the eval rows and the thresholds: so does its digest.
    digest = digest_json({"model": qm.digest, "eval": digest_json(eval_rows), "settings": settings.recipe()})
    merged, tok = load_causal_lm(qm.merged_path)
    try:
        quant, _ = load_causal_lm(qm.path)
        reloaded = True
    except StageError as exc:
        return QuantCheck(
            digest=digest,
            parents=(qm.digest,),
            passed=False,
            reasons=(f"quantized checkpoint does not load: {exc}",),
            size_ratio=math.nan,
            merged_eval_loss=math.nan,
            quantized_eval_loss=math.nan,
            loss_increase=math.nan,
            merged_latency_ms=math.nan,
            quantized_latency_ms=math.nan,
            reloaded=False,
        )
    chat = chat_format_of(qm.merged_path)
    merged_loss = answer_loss(merged, tok, eval_rows, chat=chat)
    quant_loss = answer_loss(quant, tok, eval_rows, chat=chat)
    probe = calibration_rows(eval_rows[:4], chat=chat)
    merged_ms = forward_latency_ms(merged, tok, probe)
    quant_ms = forward_latency_ms(quant, tok, probe)
    del merged, quant  # vLLM needs the memory next
    prompts = [chat.wrap(GROUNDED_QA.render(r["instruction"], r.get("context", ""))) for r in eval_rows[:8]]
    served = compare_served(Path(qm.merged_path), Path(qm.path), prompts, settings, logs)
    ratio = qm.size_bytes / max(qm.merged_size_bytes, 1)
    increase = quant_loss - merged_loss
    if not math.isfinite(quant_loss):
        reasons.append(f"quantized eval loss is {quant_loss}")
    if ratio > settings.max_size_ratio:
        reasons.append(f"size ratio {ratio:.2f} > quantization.max_size_ratio {settings.max_size_ratio}")
    if not math.isfinite(increase) or increase > settings.max_loss_increase:
        reasons.append(
            f"eval loss grew by {increase:.3f} > quantization.max_loss_increase {settings.max_loss_increase}"
        )
    reasons += serving_reasons(served, settings)
    return QuantCheck(
        digest=digest,
        parents=(qm.digest,),
        passed=not reasons,
        reasons=tuple(reasons),
        size_ratio=ratio,
        merged_eval_loss=merged_loss,
        quantized_eval_loss=quant_loss,
        loss_increase=increase,
        merged_latency_ms=merged_ms,
        quantized_latency_ms=quant_ms,
        reloaded=reloaded,
        serving=served.serving,
        merged_tokens_per_s=served.merged.tokens_per_s if served.merged else None,
        quantized_tokens_per_s=served.quantized.tokens_per_s if served.quantized else None,
        merged_p50_ms=served.merged.p50_ms if served.merged else None,
        quantized_p50_ms=served.quantized.p50_ms if served.quantized else None,
        merged_p95_ms=served.merged.p95_ms if served.merged else None,
        quantized_p95_ms=served.quantized.p95_ms if served.quantized else None,
        served_sample=served.quantized.sample if served.quantized else "",
    )

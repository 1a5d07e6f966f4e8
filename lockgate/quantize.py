"""Merge a LoRA adapter into its base and quantize the result with llm-compressor.

The output is a compressed-tensors checkpoint: transformers loads it (decompressing on the
fly) and vLLM serves it natively. ``check_quantized`` then measures whether it is really
smaller, not much worse (eval loss on the answer tokens), and how fast it answers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from lockgate.digest import digest_json, digest_tree
from lockgate.errors import StageError
from lockgate.hf import load_causal_lm
from lockgate.prep import load_jsonl
from lockgate.prompts import GROUNDED_QA, PromptTemplate
from lockgate.records import AdapterArtifact, BaseModelArtifact, QuantCheck, QuantizedModel
from lockgate.settings import QuantizationSettings
from lockgate.store import LocalArtifactStore

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


def calibration_rows(rows: list[dict[str, str]], prompt: PromptTemplate = GROUNDED_QA) -> list[str]:
    """Calibration text: prompts with their answers, as the model will see them."""
    return [prompt.render(r["instruction"], r.get("context", "")) + " " + r["output"] for r in rows]


def quantize_checkpoint(merged_dir: Path, out: Path, texts: list[str], settings: QuantizationSettings) -> Path:
    """Quantize a merged checkpoint with llm-compressor and save it compressed."""
    from datasets import Dataset
    from llmcompressor import oneshot  # type: ignore[attr-defined]

    model, tok = load_causal_lm(str(merged_dir))
    recipe = _recipe(settings)
    samples = texts[: settings.calibration_samples]
    enc = tok(samples, truncation=True, max_length=settings.max_seq_length)
    calib = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    oneshot(
        model=model,
        dataset=calib,
        recipe=recipe,
        max_seq_length=settings.max_seq_length,
        num_calibration_samples=len(samples),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return out


def _recipe(settings: QuantizationSettings) -> Any:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    ignore = ["lm_head"]
    if settings.method == "gptq":
        return GPTQModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)
    if settings.method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        return [AWQModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)]  # type: ignore[no-untyped-call]
    return QuantizationModifier(targets="Linear", scheme=settings.scheme, ignore=ignore)


def answer_loss(model: Any, tok: Any, rows: list[dict[str, str]], prompt: PromptTemplate = GROUNDED_QA) -> float:
    """Mean cross-entropy (nats/token) of the reference answers given their prompts."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for r in rows:
            p_ids = tok(prompt.render(r["instruction"], r.get("context", "")))["input_ids"]
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


def quantize_adapter(
    base: BaseModelArtifact,
    adapter: AdapterArtifact,
    train_path: Path,
    settings: QuantizationSettings,
    store: LocalArtifactStore,
) -> QuantizedModel:
    """Merge, quantize and store; the merged checkpoint is kept beside for comparison."""
    staged = store.staging("quantized")
    merged = merge_adapter(base, adapter, staged / "merged")
    texts = calibration_rows(load_jsonl(train_path))
    quantize_checkpoint(merged, staged / "model", texts, settings)
    digest = digest_tree(staged / "model")
    meta = {"adapter_digest": adapter.digest, "method": settings.method, "scheme": settings.scheme}
    (staged / "lockgate-quantized.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    _, path = store.commit("quantized", staged, digest)
    return QuantizedModel(
        digest=digest,
        parents=(adapter.digest,),
        path=str(path / "model"),
        merged_path=str(path / "merged"),
        method=settings.method,
        scheme=settings.scheme,
        adapter_digest=adapter.digest,
        size_bytes=weights_size(path / "model"),
        merged_size_bytes=weights_size(path / "merged"),
    )


def check_quantized(qm: QuantizedModel, eval_rows: list[dict[str, str]], settings: QuantizationSettings) -> QuantCheck:
    """Reload the quantized checkpoint and compare it with the merged one."""
    reasons: list[str] = []
    # The verdict depends on the model, the eval rows and the thresholds: so does its digest.
    digest = digest_json({"model": qm.digest, "eval": digest_json(eval_rows), "settings": settings.model_dump()})
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
    merged_loss = answer_loss(merged, tok, eval_rows)
    quant_loss = answer_loss(quant, tok, eval_rows)
    probe = calibration_rows(eval_rows[:4])
    merged_ms = forward_latency_ms(merged, tok, probe)
    quant_ms = forward_latency_ms(quant, tok, probe)
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
    )

"""Each selectable quantization scheme end to end: quantized by llm-compressor, reloaded by
transformers, served by a real vLLM (CPU build), answering a prompt with its tokens/s measured.

One vLLM start per checkpoint; GPTQ W4A16 (the default) goes through the whole quantization
check, which serves the unquantized model too and compares the two under the same load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lockgate._io import load_jsonl
from lockgate.basemodel import corpus_texts
from lockgate.hf import load_causal_lm
from lockgate.prompts import GROUNDED_QA
from lockgate.quantize import answer_loss, check_quantized, quantize_checkpoint, weights_size
from lockgate.records import QuantizedModel
from lockgate.serving.bench import BenchLoad, bench_checkpoint
from lockgate.serving.vllm import runs_4bit_weights
from lockgate.settings import QuantizationSettings
from tests.conftest import EXAMPLES
from tests.lockgate.serving.conftest import VLLM_PYTHON, needs_vllm

pytestmark = [pytest.mark.slow, needs_vllm]

KERNEL = {"W4A16": "CPUWNA16LinearKernel", "W8A8": "CPUInt8ScaledMMLinearKernel"}
LOAD = {"bench_requests": 8, "bench_concurrency": 4, "bench_max_tokens": 8}


def rows() -> list[dict[str, str]]:
    return load_jsonl(EXAMPLES / "data" / "qa.jsonl")[:8]


def quantized(tiny_model: Path, out: Path, settings: QuantizationSettings) -> Path:
    """Quantize, then check the checkpoint is compressed-tensors of the scheme and reloads in transformers."""
    texts = corpus_texts(sorted((EXAMPLES / "corpus").glob("*.md")))
    quantize_checkpoint(tiny_model, out, texts, settings)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    [group] = config["config_groups"].values()
    assert group["weights"]["num_bits"] == (8 if settings.scheme == "W8A8" else 4)
    assert bool(group.get("input_activations")) == (settings.scheme == "W8A8")
    model, tok = load_causal_lm(str(out))
    assert math.isfinite(answer_loss(model, tok, rows()[:2]))
    return out


@pytest.fixture(scope="module")
def four_bit_here() -> bool:
    """Whether this machine's vLLM runs 4-bit weights: its CPU build does only with AVX-512."""
    return runs_4bit_weights(str(VLLM_PYTHON))


def test_gptq_w4a16_check_measures_both_models_in_vllm(tiny_model: Path, tmp_path: Path, four_bit_here: bool) -> None:
    settings = QuantizationSettings(
        method="gptq",
        scheme="W4A16",
        calibration_samples=16,
        serving_benchmark="vllm",
        vllm_python=str(VLLM_PYTHON),
        min_serving_speedup=50.0,  # unreachable: the served speed must be judged, and reject
        **LOAD,
    )
    out = quantized(tiny_model, tmp_path / "gptq", settings)
    qm = QuantizedModel(
        digest="sha256:gptq",
        path=str(out),
        merged_path=str(tiny_model),
        method=settings.method,
        scheme=settings.scheme,
        adapter_digest="sha256:none",
        size_bytes=weights_size(out),
        merged_size_bytes=weights_size(tiny_model),
    )
    check = check_quantized(qm, rows(), settings, logs=tmp_path / "logs")

    if not four_bit_here:  # a CPU without AVX-512: the check says why it measured nothing, and blames no model
        assert check.reloaded and check.serving.startswith("not measured: vLLM's CPU build runs 4-bit"), check.serving
        assert not [r for r in check.reasons if "could not serve" in r or "min_serving_speedup" in r], check.reasons
        assert not (tmp_path / "logs" / "quantized-vllm.log").exists(), "no engine started for a model it cannot run"
        return
    assert check.reloaded and check.serving == "vllm"
    assert not [r for r in check.reasons if "could not serve" in r], check.reasons
    for value in (check.merged_tokens_per_s, check.quantized_tokens_per_s):
        assert value is not None and value > 0
    assert check.merged_p50_ms and check.merged_p95_ms and check.merged_p95_ms >= check.merged_p50_ms
    assert check.quantized_p50_ms and check.quantized_p95_ms and check.quantized_p95_ms >= check.quantized_p50_ms
    assert check.served_sample  # the quantized model answered through vLLM
    assert not check.passed and any("quantization.min_serving_speedup 50.0" in r for r in check.reasons)
    assert "quantization=compressed-tensors" in (tmp_path / "logs" / "quantized-vllm.log").read_text()
    assert "quantization=None" in (tmp_path / "logs" / "merged-vllm.log").read_text()


@pytest.mark.parametrize(("method", "scheme"), [("awq", "W4A16"), ("w8a8", "W8A8")])
def test_scheme_is_served_by_vllm(
    tiny_model: Path, tmp_path: Path, method: str, scheme: str, four_bit_here: bool
) -> None:
    if scheme == "W4A16" and not four_bit_here:
        pytest.skip("vLLM's CPU build serves 4-bit weights only with AVX-512, which this CPU lacks (W8A8 runs)")
    settings = QuantizationSettings(method=method, scheme=scheme, calibration_samples=16)  # type: ignore[arg-type]
    out = quantized(tiny_model, tmp_path / method, settings)
    prompts = tuple(GROUNDED_QA.render(r["instruction"], r["context"]) for r in rows())
    load = BenchLoad(prompts=prompts, requests=8, concurrency=4, max_tokens=8)
    speed = bench_checkpoint(str(VLLM_PYTHON), str(out), load, tmp_path / "vllm.log", max_model_len=512)
    assert speed.requests == 8 and speed.completion_tokens == 8 * 8  # ignore_eos: every request ran its length
    assert speed.tokens_per_s > 0 and speed.p95_ms >= speed.p50_ms > 0
    assert speed.sample
    served_log = (tmp_path / "vllm.log").read_text()  # vLLM ran the compressed kernels, not a decompressed copy
    assert "quantization=compressed-tensors" in served_log
    assert KERNEL[scheme] in served_log

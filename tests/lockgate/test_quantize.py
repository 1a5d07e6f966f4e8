"""The quantization check's serving benchmark: when it is measured, how it judges, how it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.quantize import ServingComparison, _cpu_awq_workaround, compare_served, serving_reasons
from lockgate.records import QuantCheck
from lockgate.serving.bench import ServedSpeed
from lockgate.settings import QuantizationSettings


def speed(tokens_per_s: float) -> ServedSpeed:
    return ServedSpeed(
        tokens_per_s=tokens_per_s, p50_ms=10.0, p95_ms=20.0, requests=4, completion_tokens=64, sample="x"
    )


def test_off_is_not_measured(tmp_path: Path) -> None:
    served = compare_served(tmp_path, tmp_path, ["q"], QuantizationSettings(serving_benchmark="off"))
    assert served.serving == "not measured: quantization.serving_benchmark is off"
    assert served.merged is None and served.quantized is None and not served.reasons


def test_auto_without_serving_environment_says_so(tmp_path: Path) -> None:
    settings = QuantizationSettings(serving_benchmark="auto", vllm_python=str(tmp_path / "no-venv" / "python"))
    served = compare_served(tmp_path, tmp_path, ["q"], settings)
    assert served.serving.startswith("not measured: no serving environment")
    assert str(tmp_path / "no-venv") in served.serving


def test_vllm_required_without_serving_environment_is_a_config_error(tmp_path: Path) -> None:
    settings = QuantizationSettings(serving_benchmark="vllm", vllm_python=str(tmp_path / "python"))
    with pytest.raises(ConfigError, match=r"quantization\.vllm_python: .* does not exist"):
        compare_served(tmp_path, tmp_path, ["q"], settings)


def test_speedup_below_the_floor_rejects() -> None:
    served = ServingComparison("vllm", merged=speed(400.0), quantized=speed(300.0))
    [reason] = serving_reasons(served, QuantizationSettings(min_serving_speedup=1.0))
    assert "x0.75" in reason and "quantization.min_serving_speedup 1.0" in reason
    assert serving_reasons(served, QuantizationSettings(min_serving_speedup=0.7)) == []
    assert serving_reasons(served, QuantizationSettings()) == []  # 0: report only


def test_unserved_model_rejects_and_unmeasured_is_not_judged() -> None:
    failed = ServingComparison("vllm", merged=speed(400.0), reasons=("vLLM could not serve the quantized model: x",))
    assert serving_reasons(failed, QuantizationSettings(min_serving_speedup=1.0)) == list(failed.reasons)
    unmeasured = ServingComparison("not measured: no serving environment")
    assert serving_reasons(unmeasured, QuantizationSettings(min_serving_speedup=2.0)) == []


def test_a_check_recorded_before_the_benchmark_still_loads() -> None:
    old = {
        "digest": "sha256:c",
        "parents": ["sha256:q"],
        "passed": True,
        "reasons": [],
        "size_ratio": 0.5,
        "merged_eval_loss": 1.0,
        "quantized_eval_loss": 1.1,
        "loss_increase": 0.1,
        "merged_latency_ms": 2.0,
        "quantized_latency_ms": 2.5,
        "reloaded": True,
    }
    check = QuantCheck.model_validate(old)
    assert check.serving == "not measured" and check.quantized_tokens_per_s is None


def test_report_rows_say_why_not_measured_or_show_numbers() -> None:
    from tasks.quantization import served_rows, served_speed

    base = {
        "digest": "sha256:c",
        "passed": True,
        "reasons": (),
        "size_ratio": 0.5,
        "merged_eval_loss": 1.0,
        "quantized_eval_loss": 1.1,
        "loss_increase": 0.1,
        "merged_latency_ms": 2.0,
        "quantized_latency_ms": 2.5,
        "reloaded": True,
    }
    settings = QuantizationSettings()
    unmeasured = QuantCheck(**base, serving="not measured: no serving environment (x is missing)")
    [row] = served_rows(unmeasured, settings)
    assert "not measured: no serving environment" in row
    assert served_speed(unmeasured) == unmeasured.serving
    measured = QuantCheck(
        **base,
        serving="vllm",
        merged_tokens_per_s=400.0,
        quantized_tokens_per_s=500.0,
        merged_p50_ms=30.0,
        quantized_p50_ms=25.0,
        merged_p95_ms=60.0,
        quantized_p95_ms=None,
    )
    rows = "\n".join(served_rows(measured, settings))
    assert "400.0 tok/s | 500.0 tok/s" in rows and "30.0 ms | 25.0 ms" in rows and "60.0 ms | failed" in rows
    assert served_speed(measured) == "400 -> 500 tokens/s in vLLM (x1.25)"


def test_awq_pinning_switched_off_only_while_quantizing_on_cpu() -> None:
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    pin = IntermediatesCache.pin_memory
    with _cpu_awq_workaround(QuantizationSettings(method="awq")):
        patched = IntermediatesCache.pin_memory is not pin
    assert patched == (not torch.accelerator.is_available())
    assert IntermediatesCache.pin_memory is pin
    with _cpu_awq_workaround(QuantizationSettings(method="gptq")):
        assert IntermediatesCache.pin_memory is pin

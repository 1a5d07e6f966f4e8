"""Merge + quantize task and the check that the result is smaller and not worse."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lockgate._io import load_jsonl
from lockgate.quantize import check_quantized, quantize_adapter
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot, QuantCheck, QuantizedModel
from lockgate.settings import QuantizationSettings
from lockgate.workspace import Workspace
from tasks.common import StageCache


@task(
    name="quantize",
    cache_policy=StageCache(
        stage="quantize", modules=("lockgate.quantize", "lockgate.serving.bench"), ignore=("workspace",)
    ),
    persist_result=True,
    result_serializer="json",
)
def quantize_model(
    *,
    base: BaseModelArtifact,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    quantization: QuantizationSettings,
    workspace: Workspace,
) -> tuple[QuantizedModel, QuantCheck]:
    """Merge the adapter, quantize with llm-compressor, reload and compare with the merged model."""
    logger = get_run_logger()
    qm = quantize_adapter(base, adapter, Path(snapshot.train_path), quantization, workspace.artifacts)
    check = check_quantized(qm, load_jsonl(Path(snapshot.eval_path)), quantization)
    logger.info(
        "quantized %s %s: size ratio %.2f, eval loss %.3f -> %.3f, served speed: %s, passed=%s",
        qm.method,
        qm.scheme,
        check.size_ratio,
        check.merged_eval_loss,
        check.quantized_eval_loss,
        served_speed(check),
        check.passed,
    )
    create_markdown_artifact(
        key="quantization",
        markdown="\n".join(
            [
                f"# Quantization check: {'passed' if check.passed else 'FAILED'}",
                "",
                "| | merged (fp32) | quantized |",
                "|---|---|---|",
                f"| method | - | {qm.method} {qm.scheme} |",
                f"| weights | {qm.merged_size_bytes / 1e6:.2f} MB "
                f"| {qm.size_bytes / 1e6:.2f} MB (x{check.size_ratio:.2f}) |",
                f"| eval loss (answer tokens) | {check.merged_eval_loss:.3f} | {check.quantized_eval_loss:.3f} |",
                f"| forward latency, transformers (median) | {check.merged_latency_ms:.1f} ms "
                f"| {check.quantized_latency_ms:.1f} ms |",
                *served_rows(check, quantization),
                "",
                *(f"- {r}" for r in check.reasons),
                "",
                f"Checkpoint: `{qm.path}`",
                "",
                "transformers decompresses the weights at load, so its latency says nothing of the quantized "
                "kernels; speed is measured where the model is served (vLLM): "
                f"{'measured' if check.serving == 'vllm' else check.serving}.",
            ]
        ),
        description="Is the quantized model smaller and not much worse?",
    )
    return qm, check


def served_speed(check: QuantCheck) -> str:
    """One phrase: the served speed-up, or why there is none."""
    if check.merged_tokens_per_s and check.quantized_tokens_per_s:
        return (
            f"{check.merged_tokens_per_s:.0f} -> {check.quantized_tokens_per_s:.0f} tokens/s in vLLM "
            f"(x{check.quantized_tokens_per_s / check.merged_tokens_per_s:.2f})"
        )
    return check.serving


def served_rows(check: QuantCheck, settings: QuantizationSettings) -> list[str]:
    """The report's rows for the vLLM benchmark: measured numbers, or one row saying why not."""
    if check.serving != "vllm":
        return [f"| tokens/s and latency in vLLM | {check.serving} | {check.serving} |"]

    def cell(value: float | None, unit: str) -> str:
        return "failed" if value is None else f"{value:.1f} {unit}"

    load = f"{settings.bench_requests} x {settings.bench_max_tokens} tokens, concurrency {settings.bench_concurrency}"
    return [
        f"| tokens/s in vLLM ({load}; merged in bf16) | {cell(check.merged_tokens_per_s, 'tok/s')} "
        f"| {cell(check.quantized_tokens_per_s, 'tok/s')} |",
        f"| latency in vLLM, p50 | {cell(check.merged_p50_ms, 'ms')} | {cell(check.quantized_p50_ms, 'ms')} |",
        f"| latency in vLLM, p95 | {cell(check.merged_p95_ms, 'ms')} | {cell(check.quantized_p95_ms, 'ms')} |",
    ]

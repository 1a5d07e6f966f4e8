"""Merge + quantize task and the check that the result is smaller and not worse."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lockgate.prep import load_jsonl
from lockgate.quantize import check_quantized, quantize_adapter
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot, QuantCheck, QuantizedModel
from lockgate.settings import QuantizationSettings
from lockgate.store import LocalArtifactStore
from tasks.common import StageCache


@task(
    name="quantize",
    cache_policy=StageCache(stage="quantize", modules=("lockgate.quantize",), ignore=("artifacts_root",)),
    persist_result=True,
    result_serializer="json",
)
def quantize_model(
    base: BaseModelArtifact,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    quantization: QuantizationSettings,
    artifacts_root: str,
) -> tuple[QuantizedModel, QuantCheck]:
    """Merge the adapter, quantize with llm-compressor, reload and compare with the merged model."""
    logger = get_run_logger()
    qm = quantize_adapter(
        base, adapter, Path(snapshot.train_path), quantization, LocalArtifactStore(Path(artifacts_root))
    )
    check = check_quantized(qm, load_jsonl(Path(snapshot.eval_path)), quantization)
    logger.info(
        "quantized %s %s: size ratio %.2f, eval loss %.3f -> %.3f, passed=%s",
        qm.method,
        qm.scheme,
        check.size_ratio,
        check.merged_eval_loss,
        check.quantized_eval_loss,
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
                f"| forward latency (median) | {check.merged_latency_ms:.1f} ms "
                f"| {check.quantized_latency_ms:.1f} ms |",
                "",
                *(f"- {r}" for r in check.reasons),
                "",
                f"Checkpoint: `{qm.path}`",
                "",
                "On CPU, transformers decompresses the weights at load, so latency is not expected to improve here;"
                " vLLM runs the compressed kernels on GPU.",
            ]
        ),
        description="Is the quantized model smaller and not much worse?",
    )
    return qm, check

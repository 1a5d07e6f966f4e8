"""Model cards: what a promoted model is, in the Hugging Face format (``README.md`` with YAML metadata).

A card names the base model and its license, the data snapshot (with the secrets redacted from it,
per kind), the evaluation's metrics with their intervals, the gate decision with its checks and the
policy digest, and the quantization scheme. It is built from the stage records alone, so the same
records give the same card, byte for byte (no clock in it).

Cards live outside the model folders, which are signed and never change after commit:
``<home>/reports/cards/<model digest>/README.md``. ``huggingface_hub.ModelCard.load`` reads them back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lockgate._io import atomic_write_text
from lockgate.digest import digest_bytes, short
from lockgate.records import (
    AdapterArtifact,
    BaseModelArtifact,
    DatasetSnapshot,
    EvalReport,
    GateDecision,
    MetricSummary,
    QuantizedModel,
)

CARD_FILE = "README.md"

# Every interval in an EvalReport is a 95% bootstrap interval of the mean (lockgate.evaluate).
METRIC_CONFIDENCE = 0.95

# The task the evaluation measures, in the Hub's model-index vocabulary.
TASK_TYPE = "question-answering"
TASK_NAME = "Grounded question answering (RAG)"


def card_path(reports: Path, model_digest: str) -> Path:
    """Where the card of a model lives: beside the other reports, one folder per model digest."""
    return reports / "cards" / short(model_digest, 64) / CARD_FILE


def model_card(
    *,
    model: QuantizedModel,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    decision: GateDecision,
    base: BaseModelArtifact | None,
    evaluation: EvalReport | None,
) -> ModelCard:
    """The card of a released model, from the records of the stages that made and judged it.

    Args:
        base: the base model (None: named from the adapter only, license unknown).
        evaluation: the report the gate decided on (None: the card has no metrics).
    """
    license_id = base.license.strip().lower() if base is not None and base.license else "unknown"
    base_name = base.name if base is not None else adapter.base_model
    model_name = f"lockgate-{short(model.digest)}"
    challenger = evaluation.challenger.metrics if evaluation is not None else {}
    data = ModelCardData(
        license=license_id,
        base_model=base_name,
        datasets=[snapshot.name],
        metrics=sorted(challenger) or None,
        model_name=model_name,
        eval_results=_eval_results(evaluation, snapshot) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["lockgate", "lora", model.method, model.scheme],
        lockgate=_lockgate_metadata(model, adapter, snapshot, decision, base, evaluation),
    )
    body = _body(model_name, model, adapter, snapshot, decision, base, base_name, license_id, evaluation)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_card(card: ModelCard, path: Path) -> str:
    """Write the card (atomically: a reader sees the old card or the new one); returns its digest."""
    text = str(card)
    atomic_write_text(path, text)
    return digest_bytes(text.encode("utf-8"))


def card_markdown(card: ModelCard) -> str:
    """The card for a Markdown viewer (the Prefect UI): its body, then its metadata as a YAML block."""
    return f"{card.text.strip()}\n\n## Card metadata\n\n```yaml\n{card.data.to_yaml()}\n```\n"


def _number(value: float | None) -> float | None:
    """A value for YAML: rounded, and None where it is not a number (YAML has no JSON-safe NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _interval(summary: MetricSummary) -> dict[str, Any]:
    return {
        "mean": _number(summary.mean),
        "ci_low": _number(summary.ci_low),
        "ci_high": _number(summary.ci_high),
        "n": summary.n,
    }


def _eval_results(evaluation: EvalReport | None, snapshot: DatasetSnapshot) -> list[EvalResult]:
    if evaluation is None:
        return []
    results = []
    for metric, summary in sorted(evaluation.challenger.metrics.items()):
        if not summary.is_valid:  # the model-index wants a value; the lockgate block keeps the null
            continue
        results.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name=TASK_NAME,
                dataset_type=snapshot.name,
                dataset_name=f"{snapshot.name} (eval split)",
                dataset_split="eval",
                dataset_revision=snapshot.digest,
                metric_type=metric,
                metric_value=_number(summary.mean),
                metric_name=f"{metric} ({METRIC_CONFIDENCE:.0%} CI {summary.ci_low:.3f} to "
                f"{summary.ci_high:.3f}, n={summary.n})",
            )
        )
    return results


def _lockgate_metadata(
    model: QuantizedModel,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    decision: GateDecision,
    base: BaseModelArtifact | None,
    evaluation: EvalReport | None,
) -> dict[str, Any]:
    """Everything the card says, as data: digests for lineage, numbers with their intervals."""
    meta: dict[str, Any] = {
        "model": model.digest,
        "quantization": {
            "method": model.method,
            "scheme": model.scheme,
            "size_bytes": model.size_bytes,
            "merged_size_bytes": model.merged_size_bytes,
        },
        "base_model": {
            "name": base.name if base is not None else adapter.base_model,
            "digest": base.digest if base is not None else adapter.base_digest,
            "revision": base.revision if base is not None else None,
            "license": base.license if base is not None else None,
            "source": base.source if base is not None else None,
            "source_digest": base.source_digest if base is not None else None,
            "architecture": base.architecture if base is not None else None,
            "parameters": base.parameters if base is not None else None,
        },
        "adapter": {
            "digest": adapter.digest,
            "training_config": adapter.config_digest,
            "steps": adapter.steps,
            "train_loss": _number(adapter.train_loss),
            "eval_loss": _number(adapter.eval_loss),
        },
        "dataset": {
            "name": snapshot.name,
            "digest": snapshot.digest,
            "train_rows": snapshot.n_train,
            "eval_rows": snapshot.n_eval,
            "quarantined_rows": snapshot.n_quarantined,
            "duplicate_rows": snapshot.n_duplicates,
            "secrets_redacted": dict(sorted(snapshot.pii_found.items())),
        },
        "gate": {
            "decision": decision.digest,
            "passed": decision.passed,
            "policy": decision.policy_digest,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
            "paired_gain": {m: d.describe() for m, d in sorted(decision.paired.items())},
        },
    }
    if evaluation is not None:
        meta["evaluation"] = {
            "report": evaluation.digest,
            "prompt_version": evaluation.prompt_version,
            "index": evaluation.index_digest,
            "questions": evaluation.n_questions,
            "confidence": METRIC_CONFIDENCE,
            "metrics": {m: _interval(s) for m, s in sorted(evaluation.challenger.metrics.items())},
            "champion": {
                "model": evaluation.champion.model_id,
                "metrics": {m: _interval(s) for m, s in sorted(evaluation.champion.metrics.items())},
            },
        }
    return meta


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _body(
    model_name: str,
    model: QuantizedModel,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    decision: GateDecision,
    base: BaseModelArtifact | None,
    base_name: str,
    license_id: str,
    evaluation: EvalReport | None,
) -> str:
    verdict = "passed" if decision.passed else "rejected"
    lines = [
        f"# {model_name}",
        "",
        f"A LoRA fine-tune of `{base_name}` on the `{snapshot.name}` data set, merged and quantized "
        f"({model.method} {model.scheme}), released by Lockgate after its gate {verdict}.",
        "",
        "## Base model and license",
        "",
        f"- Base model: `{base_name}` (digest `{short(base.digest if base else adapter.base_digest)}`)",
        f"- License: **{license_id}**, the base model's: a fine-tune is used under its base model's license.",
    ]
    if base is not None and base.source:
        lines.append(f"- Converted from: `{base.source}`")
    lines += [
        "",
        "## Training data",
        "",
        f"- Snapshot `{snapshot.name}`, digest `{snapshot.digest}`",
        f"- {snapshot.n_train} training rows, {snapshot.n_eval} evaluation rows; "
        f"{snapshot.n_quarantined} quarantined, {snapshot.n_duplicates} duplicates removed",
    ]
    if snapshot.pii_found:
        lines += ["", "Secrets and personal data redacted or dropped, per kind:", "", "| kind | count |", "|---|---|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(snapshot.pii_found.items())]
    lines += ["", "## Evaluation", ""]
    if evaluation is None:
        lines.append("No evaluation report was given for this card.")
    else:
        lines += [
            f"{evaluation.n_questions} questions of the eval split, prompt `{evaluation.prompt_version}`; "
            f"means with {METRIC_CONFIDENCE:.0%} bootstrap intervals.",
            "",
            "| metric | this model | interval | champion |",
            "|---|---|---|---|",
        ]
        for metric, s in sorted(evaluation.challenger.metrics.items()):
            champ = evaluation.champion.metrics.get(metric)
            lines.append(
                f"| {metric} | {_fmt(s.mean)} | [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] | "
                f"{_fmt(champ.mean) if champ else 'n/a'} |"
            )
    lines += [
        "",
        "## Gate decision",
        "",
        f"{verdict.capitalize()}: decision `{decision.digest}` under policy `{decision.policy_digest}`.",
        "",
        *(f"- {'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in decision.checks),
        "",
        "## Quantization",
        "",
        f"- {model.method} {model.scheme}: {model.size_bytes:,} bytes (merged model {model.merged_size_bytes:,} bytes)",
        f"- Adapter `{short(adapter.digest)}`: {adapter.steps} steps, eval loss {_fmt(adapter.eval_loss)}",
        "",
    ]
    return "\n".join(lines)

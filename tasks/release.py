"""Gate and promotion tasks, and the end-of-run summary."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.gates import decide
from lockgate.records import (
    AdapterArtifact,
    DatasetSnapshot,
    DriftReport,
    EvalReport,
    GateDecision,
    Promotion,
    QuantCheck,
    QuantizedModel,
)
from lockgate.registry import LocalRegistry, describe_state
from lockgate.settings import GateSettings


@task(name="gate")
def gate(
    evaluation: EvalReport | None,
    quant: QuantCheck | None,
    drift: DriftReport | None,
    policy: GateSettings,
    candidate_digest: str | None,
    dataset_name: str,
) -> GateDecision:
    """Apply the promotion policy; the result is a typed decision that fails closed."""
    logger = get_run_logger()
    decision = decide(evaluation, quant, drift, policy, candidate_digest)
    create_table_artifact(
        key="gate-decision",
        table=[{"check": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
        description=f"Gate {'PASSED' if decision.passed else 'REJECTED'}",
    )
    for check in decision.checks:
        (logger.info if check.passed else logger.warning)("gate %s: %s", check.name, check.detail)
    emit_event(
        event=events.GATE_PASSED if decision.passed else events.GATE_REJECTED,
        resource=events.dataset_resource(dataset_name),
        payload={"candidate": candidate_digest, "reasons": list(decision.reasons), "metrics": decision.metrics},
    )
    return decision


@task(name="promote")
def promote(
    decision: GateDecision,
    candidate: QuantizedModel,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    registry_root: str,
) -> Promotion:
    """Register the candidate; move ``production`` to it only if the gate passed."""
    logger = get_run_logger()
    registry = LocalRegistry(Path(registry_root))
    lineage = {
        "quantized": candidate.digest,
        "adapter": adapter.digest,
        "base": adapter.base_digest,
        "dataset": snapshot.digest,
        "dataset_train": snapshot.train_path,
        "training_config": adapter.config_digest,
        "gate": decision.digest,
        "eval_metrics": decision.metrics,
    }
    registry.register(candidate.digest, candidate.path, lineage)
    registry.set_alias("candidate", candidate.digest, reason=f"built from dataset {snapshot.digest[:19]}")
    previous = registry.get("production")
    if decision.passed:
        if previous is not None and previous.digest == candidate.digest:
            result = Promotion(
                action="kept",
                alias="production",
                model_digest=candidate.digest,
                previous_digest=previous.digest,
                reasons=("already in production",),
            )
        else:
            registry.set_alias("production", candidate.digest, reason="; ".join(decision.reasons))
            result = Promotion(
                action="promoted",
                alias="production",
                model_digest=candidate.digest,
                previous_digest=previous.digest if previous else None,
                reasons=decision.reasons,
            )
            emit_event(
                event=events.MODEL_PROMOTED,
                resource=events.model_resource(candidate.digest),
                payload={"alias": "production", "previous": result.previous_digest},
            )
    else:
        result = Promotion(
            action="kept",
            alias="production",
            model_digest=previous.digest if previous else None,
            previous_digest=previous.digest if previous else None,
            reasons=decision.reasons,
        )
    logger.info("promotion: %s (production = %s)", result.action, (result.model_digest or "none")[:19])
    create_markdown_artifact(
        key="registry",
        markdown="# Registry\n\n" + describe_state(registry.snapshot()),
        description="Aliases after this run",
    )
    return result

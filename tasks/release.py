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
    registry_root: str,
) -> GateDecision:
    """Apply the promotion policy; the result is a typed decision that fails closed."""
    logger = get_run_logger()
    revoked = LocalRegistry(Path(registry_root)).revoked_reason(candidate_digest) if candidate_digest else None
    decision = decide(evaluation, quant, drift, policy, candidate_digest, revoked=revoked)
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
    expected_production: str | None,
    registry_root: str,
) -> Promotion:
    """Register the candidate and, only if the gate passed, make it production, in one atomic write.

    ``expected_production`` is the production model the candidate was judged against; if
    production moved since (another run promoted meanwhile), nothing moves.
    """
    logger = get_run_logger()
    registry = LocalRegistry(Path(registry_root))
    # Build lineage only: it is the same for every run that makes this digest.
    lineage = {
        "quantized": candidate.digest,
        "adapter": adapter.digest,
        "base": adapter.base_digest,
        "dataset": snapshot.digest,
        "dataset_train": snapshot.train_path,
        "training_config": adapter.config_digest,
    }
    evidence = {"gate": decision.digest, "passed": decision.passed, "metrics": decision.metrics}
    action, previous = registry.record_release(
        candidate.digest, candidate.path, lineage, evidence, decision.passed, expected_production
    )
    production = candidate.digest if action == "promoted" else previous
    reasons = decision.reasons if action == "promoted" or not decision.passed else ("already in production",)
    result = Promotion(
        action="promoted" if action == "promoted" else "kept",
        alias="production",
        model_digest=production,
        previous_digest=previous,
        reasons=reasons,
    )
    if action == "promoted":
        emit_event(
            event=events.MODEL_PROMOTED,
            resource=events.model_resource(candidate.digest),
            payload={"alias": "production", "previous": previous},
        )
    logger.info("promotion: %s (production = %s)", result.action, (result.model_digest or "none")[:19])
    create_markdown_artifact(
        key="registry",
        markdown="# Registry\n\n" + describe_state(registry.snapshot()),
        description="Aliases after this run",
    )
    return result

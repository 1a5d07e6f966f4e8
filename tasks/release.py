"""Gate, approval and promotion tasks."""

from __future__ import annotations

from prefect import get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import Field

from lockgate import events
from lockgate.cards import card_markdown, card_path, model_card, write_card
from lockgate.digest import short
from lockgate.gates import (
    Approval,
    commit_decision,
    decide_release,
    promotion_evidence,
    promotion_outcome,
    verdict_word,
    with_approval,
)
from lockgate.policy import GatePolicy
from lockgate.records import (
    AdapterArtifact,
    BaseModelArtifact,
    DatasetSnapshot,
    DriftReport,
    EvalReport,
    GateDecision,
    Promotion,
    QuantCheck,
    QuantizedModel,
    ReleaseLineage,
)
from lockgate.registry import describe_state
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, record_on_dashboard


@task(name="gate", cache_policy=DEFAULT_BUT_WORKSPACE)
def gate(
    *,
    evaluation: EvalReport | None,
    quant: QuantCheck | None,
    drift: DriftReport | None,
    base: BaseModelArtifact | None,
    policy: GatePolicy,
    expected: ReleaseLineage,
    workspace: Workspace,
) -> GateDecision:
    """Apply the promotion policy (the base model's license included); a typed decision that fails closed."""
    logger = get_run_logger()
    candidate = expected.candidate
    revoked = workspace.registry.revoked_reason(candidate) if candidate else None
    production = workspace.registry.get("production")
    decision = decide_release(
        evaluation=evaluation,
        quant=quant,
        drift=drift,
        base=base,
        policy=policy,
        expected=expected,
        revoked=revoked,
        champion_in_production=production is not None and production.digest == expected.champion,
    )
    publish_decision(decision)
    for check in decision.checks:
        (logger.info if check.passed else logger.warning)("gate %s: %s", check.name, check.detail)
    if evaluation is not None:
        scores = {f"challenger_{m}": v.mean for m, v in evaluation.challenger.metrics.items()}
        scores |= {f"champion_{m}": v.mean for m, v in evaluation.champion.metrics.items()}
        record_on_dashboard(workspace, "gate", scores)
    return decision


def publish_decision(decision: GateDecision) -> None:
    """The checks as a table artifact in the UI."""
    create_table_artifact(
        key="gate-decision",
        table=[{"check": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
        description=f"Gate {verdict_word(decision)} (policy {short(decision.policy_digest)})",
    )


def emit_verdict(decision: GateDecision, dataset_name: str) -> None:
    """``lockgate.gate.passed`` or ``lockgate.gate.rejected``, with the decision's digest and reasons."""
    emit_event(
        event=events.GATE_PASSED
        if decision.passed
        else events.GATE_UNCHANGED
        if decision.unchanged
        else events.GATE_REJECTED,
        resource=events.dataset_resource(dataset_name),
        payload={
            "decision": decision.digest,
            "candidate": decision.candidate_digest,
            "policy": decision.policy_digest,
            "reasons": list(decision.reasons),
            "metrics": decision.metrics,
        },
    )


class ApprovalInput(RunInput):
    """What the Prefect UI asks a reviewer when a release waits for approval."""

    approve: bool = Field(description="Promote this candidate to production?")
    reviewer: str = Field(min_length=1, max_length=200, description="Who decides (recorded in the history).")
    comment: str = Field(default="", max_length=2000, description="Why (recorded in the history).")


def await_approval(decision: GateDecision, timeout_s: int) -> GateDecision:
    """Pause the flow run until a reviewer answers in the UI (or the API); no answer in time rejects.

    Only a decision that passed every automatic check is put to a person.
    """
    if not decision.passed:
        return decision
    logger = get_run_logger()
    logger.info("gate passed; waiting up to %d s for approval in the Prefect UI", timeout_s)
    try:
        answer = pause_flow_run(wait_for_input=ApprovalInput, timeout=timeout_s)
    except FlowPauseTimeout:
        approval = None
    else:
        approval = Approval(approve=answer.approve, reviewer=answer.reviewer, comment=answer.comment)
    decided = with_approval(decision, approval, timeout_s)
    logger.info("approval: %s", decided.checks[-1].detail)
    publish_decision(decided)
    return decided


@task(name="promote", cache_policy=DEFAULT_BUT_WORKSPACE)
def promote(
    *,
    decision: GateDecision,
    candidate: QuantizedModel,
    adapter: AdapterArtifact,
    snapshot: DatasetSnapshot,
    expected_production: str | None,
    workspace: Workspace,
    dry_run: bool = False,
    base: BaseModelArtifact | None = None,
    evaluation: EvalReport | None = None,
) -> Promotion:
    """Register the candidate and, only if the gate passed, make it production, in one atomic write.

    ``expected_production`` is the production model the candidate was judged against; if
    production moved since (another run promoted meanwhile), nothing moves. In a dry run
    nothing is written at all. The decision is committed first, as a signed artifact the evidence
    names (``lockgate verify`` checks a promoted model against it). A candidate the gate passed gets
    its model card
    (``<home>/reports/cards/<digest>/README.md``, outside the signed model folder), named in the
    registry's evidence and shown as the ``model-card`` artifact; ``base`` and ``evaluation``
    fill it (without them it says the license and metrics are unknown).
    """
    logger = get_run_logger()
    models = workspace.registry
    if dry_run:
        current = models.get("production")
        result = promotion_outcome(decision, "kept", current.digest if current else None, candidate.digest, True)
        logger.info("dry run: %s", result.reasons[0])
        return result
    # Build lineage only: it is the same for every run that makes this digest.
    lineage = {
        "quantized": candidate.digest,
        "adapter": adapter.digest,
        "base": adapter.base_digest,
        "dataset": snapshot.digest,
        "dataset_train": snapshot.train_path,
        "training_config": adapter.config_digest,
    }
    evidence = promotion_evidence(decision)
    decided = commit_decision(decision, workspace.artifacts)
    evidence["decision"] = {"path": str(decided), "digest": decision.digest}
    if decision.passed:
        card = model_card(
            model=candidate, adapter=adapter, snapshot=snapshot, decision=decision, base=base, evaluation=evaluation
        )
        path = card_path(workspace.reports, candidate.digest)
        evidence["card"] = {"path": str(path), "digest": write_card(card, path)}
        create_markdown_artifact(
            key="model-card", markdown=card_markdown(card), description=f"Model card of {short(candidate.digest)}"
        )
        logger.info("model card: %s", path)
    action, previous = models.record_release(
        candidate.digest, candidate.path, lineage, evidence, decision.passed, expected_production
    )
    result = promotion_outcome(decision, action, previous, candidate.digest)
    if result.action == "promoted":
        emit_event(
            event=events.MODEL_PROMOTED,
            resource=events.model_resource(candidate.digest),
            payload={"alias": "production", "previous": previous, "decision": decision.digest},
        )
    logger.info("promotion: %s (production = %s)", result.action, short(result.model_digest or "none"))
    create_markdown_artifact(
        key="registry",
        markdown="# Registry\n\n" + describe_state(models.snapshot()),
        description="Aliases after this run",
    )
    return result

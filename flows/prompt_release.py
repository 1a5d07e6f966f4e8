"""The prompt-only release (a new prompt version, evaluated with the production model, gated, promoted)
and the prompt x model evaluation matrix."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import PromptMatrixParams, PromptReleaseParams, PromptReleaseSummary
from lockgate.errors import GateRejected
from lockgate.evaluate import MatrixReport, prompt_contenders
from lockgate.policy import load_policy, prompt_policy
from lockgate.records import ReleaseLineage
from lockgate.workspace import Workspace
from tasks.common import StageLog, fingerprints
from tasks.data import prepare_dataset
from tasks.drift import keep_reference
from tasks.evaluation import EvalInputs, MatrixInputs, evaluate_candidate, evaluate_prompt_matrix, serving_prompt
from tasks.index import refresh_index
from tasks.prompts import candidate_prompt, gate_prompt, matrix_contenders, production_model, promote_prompt
from tasks.release import await_approval


@flow(name="prompt-release", log_prints=False)
def prompt_release(params: PromptReleaseParams = PromptReleaseParams()) -> PromptReleaseSummary:  # noqa: B008
    """Release a new version of a prompt without retraining: the production model answers the eval
    questions with the candidate prompt and with the production prompt, the release policy judges the
    paired difference (in the prompts' own gate mode, non-inferiority by default), and the prompt is
    promoted to production, or to canary with a traffic weight, only if every check passes.

    Started by a lockgate.prompt.changed event when a prompt file changes.
    """
    logger = get_run_logger()
    settings = params.settings()
    policy = prompt_policy(load_policy(settings.policy_path), settings.prompts.release_mode)
    name = params.prompt or settings.prompts.name
    workspace = Workspace.open(settings)
    stages = StageLog(artifacts=workspace.artifacts)

    candidate = candidate_prompt(prompts_dir=str(settings.prompts_path), name=name, digest=params.prompt_digest)
    model = production_model(workspace=workspace)
    current = serving_prompt(name=name, prompts_dir=str(settings.prompts_path), workspace=workspace)
    summary = PromptReleaseSummary(
        passed=True,
        action="kept",
        reasons=[f"{candidate.version} is already the production prompt"],
        prompt=name,
        candidate=candidate.version,
        production=current.version,
        model=model.digest,
        trigger=params.prompt_digest,
    )
    if candidate.digest == current.digest:
        logger.info("nothing to release: %s", summary.reasons[0])
        return summary

    stage_fingerprints = fingerprints(settings)
    with stages.timed("prep"):
        snapshot = prepare_dataset(sources=settings.sources, data=settings.data, workspace=workspace)
    with stages.timed("refresh"):
        index = refresh_index(
            corpus_dir=str(settings.resolve(settings.data.corpus_dir)),
            data=settings.data,
            embeddings=settings.embeddings,
            vector_store=settings.vector_store,
            workspace=workspace,
        )
    with stages.timed("evaluate"):
        challenger, champion = prompt_contenders(model, candidate, current)
        evaluation = stages.run_cached(
            "evaluate",
            evaluate_candidate,
            inputs=EvalInputs(
                candidate=challenger,
                champion=champion,
                snapshot=snapshot,
                index=index,
                embedder_weights=stage_fingerprints.embedder_weights,
                prompt=candidate,
                champion_prompt=current,
            ),
            evaluation=settings.evaluation,
            embeddings=settings.embeddings,
            vector_store=settings.vector_store,
            workspace=workspace,
        )
    expected = ReleaseLineage(
        candidate=model.digest,
        champion=model.digest,
        dataset=snapshot.digest,
        index=index.digest,
        prompt_version=candidate.version,
    )
    decision = gate_prompt(
        evaluation=evaluation,
        policy=policy,
        expected=expected,
        candidate=candidate,
        production=current,
        workspace=workspace,
    )
    if settings.gates.decision_mode == "manual":
        decision = await_approval(decision, settings.gates.approval_timeout_s)
    action, production, traffic = promote_prompt(
        decision=decision,
        candidate=candidate,
        production=current,
        prompts=settings.prompts,
        workspace=workspace,
        dry_run=settings.gates.decision_mode == "dry_run",
    )
    if action in ("promoted", "canary"):
        keep_reference(snapshot=snapshot, embeddings=settings.embeddings, workspace=workspace)
    summary = summary.model_copy(
        update={
            "passed": decision.passed,
            "action": action,
            "reasons": list(decision.reasons),
            "production": production,
            "metrics": decision.metrics,
            "baseline": decision.baseline,
            "paired": {m: d.describe() for m, d in decision.paired.items()},
            "checks": [f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in decision.checks],
            "decision": decision.digest,
            "policy": decision.policy_digest,
            "traffic": traffic,
            "eval_rows": evaluation.rows_path,
        }
    )
    create_markdown_artifact(
        key="prompt-release-summary",
        markdown=prompt_summary_markdown(summary),
        description="The prompt-only release: what was compared and what the gate decided",
    )
    if not summary.passed and action != "dry_run":
        raise GateRejected("gate rejected the prompt: " + "; ".join(summary.reasons), details=summary)
    logger.info("prompt release %s: %s", action, "; ".join(summary.reasons))
    return summary


def prompt_summary_markdown(summary: PromptReleaseSummary) -> str:
    """The end-of-run report, in the UI and on the command line."""
    verdicts = {
        "promoted": "PASSED, promoted to production",
        "canary": f"PASSED, promoted to canary ({summary.traffic.get('canary', 0):.0%} of traffic)",
        "dry_run": f"DRY RUN ({'would pass' if summary.passed else 'would be rejected'}), nothing moved",
    }
    default = "PASSED (nothing to move)" if summary.passed else "REJECTED, production prompt unchanged"
    lines = [
        f"# Prompt release {summary.prompt}: {verdicts.get(summary.action, default)}",
        "",
        f"- candidate: `{summary.candidate}`",
        f"- production prompt now: `{summary.production}`",
        f"- model (production, not retrained): `{summary.model}`",
        "",
        "## Why",
        "",
        *(f"- {r}" for r in summary.reasons),
    ]
    if summary.metrics:
        lines += ["", "## Metrics (candidate prompt vs production prompt)", "", "| metric | candidate | production |"]
        lines += ["|---|---|---|"]
        baseline = summary.baseline
        lines += [f"| {m} | {v:.3f} | {baseline.get(m, float('nan')):.3f} |" for m, v in summary.metrics.items()]
    if summary.paired:
        lines += ["", "## Paired gain (same questions, candidate minus production)", ""]
        lines += [f"- {m}: {d}" for m, d in summary.paired.items()]
    if summary.checks:
        lines += ["", "## Gate checks", ""] + [f"- {c}" for c in summary.checks]
    if summary.trigger:
        lines += ["", f"Started by a prompt change event (version `{summary.trigger}`)."]
    return "\n".join(lines) + "\n"


@flow(name="prompt-matrix", log_prints=False)
def prompt_matrix(params: PromptMatrixParams = PromptMatrixParams()) -> MatrixReport:  # noqa: B008
    """Evaluate prompt versions x model variants on the eval set with retrieval (each model alias after
    the first also with its merged, un-quantized twin): a table of every cell's score with its paired
    confidence interval against the first prompt with the first model (production's), published here
    as an artifact and to W&B as a table."""
    settings = params.settings()
    name = params.prompt or settings.prompts.name
    workspace = Workspace.open(settings)
    prompts, models = matrix_contenders(
        name=name,
        prompt_refs=params.prompts,
        model_aliases=params.models,
        prompts_dir=str(settings.prompts_path),
        workspace=workspace,
    )
    snapshot = prepare_dataset(sources=settings.sources, data=settings.data, workspace=workspace)
    index = refresh_index(
        corpus_dir=str(settings.resolve(settings.data.corpus_dir)),
        data=settings.data,
        embeddings=settings.embeddings,
        vector_store=settings.vector_store,
        workspace=workspace,
    )
    return evaluate_prompt_matrix(
        matrix=MatrixInputs(prompts=prompts, models=models, snapshot=snapshot, index=index),
        evaluation=settings.evaluation,
        embeddings=settings.embeddings,
        vector_store=settings.vector_store,
        workspace=workspace,
        metric=load_policy(settings.policy_path).primary_metric,
    )

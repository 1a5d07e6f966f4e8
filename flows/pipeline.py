"""The release pipeline: new data in, a gated, promoted, quantized model out."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.drift import check_drift_here
from flows.finetune import prepare_and_train
from flows.params import ReleaseParams, ReleaseSummary, timings_and_outputs
from lockgate.cards import card_path
from lockgate.errors import GateRejected
from lockgate.policy import load_policy
from lockgate.records import ReleaseLineage
from lockgate.workspace import Workspace
from tasks.common import StageLog, fingerprints
from tasks.drift import keep_reference
from tasks.evaluation import EvalInputs, evaluate_candidate, find_champion, serving_prompt
from tasks.index import refresh_index, switch_index_after_gates
from tasks.quantization import quantize_model
from tasks.release import await_approval, emit_verdict, gate, promote


@flow(name="release", log_prints=False)
def release(params: ReleaseParams = ReleaseParams()) -> ReleaseSummary:  # noqa: B008 (the UI form's default)
    """Prepare the data, fine-tune with Axolotl, quantize, refresh the index, evaluate against the
    champion with Ragas, check drift with Evidently, and promote the candidate only if every gate passes.

    Unchanged inputs are served from cache, so a re-run without new data is quick. With
    decision mode 'manual' the run pauses after the gate until you approve or reject it here.
    """
    logger = get_run_logger()
    settings = params.settings()
    policy = load_policy(settings.policy_path)
    workspace = Workspace.open(settings)
    stages = StageLog(artifacts=workspace.artifacts)
    stage_fingerprints = fingerprints(settings)

    trained = prepare_and_train(
        stages=stages,
        settings=settings,
        workspace=workspace,
        params=params,
        trainer_env=stage_fingerprints.trainer_env,
    )
    snapshot, base, adapter = trained.snapshot, trained.base, trained.adapter
    corpus_dir = settings.resolve(settings.data.corpus_dir)
    with stages.timed("quantize"):
        quantized, quant_check = stages.run_cached(
            "quantize",
            quantize_model,
            base=base,
            adapter=adapter,
            snapshot=snapshot,
            quantization=settings.quantization,
            workspace=workspace,
        )
    with stages.timed("refresh"):
        index = refresh_index(
            corpus_dir=str(corpus_dir),
            data=settings.data,
            embeddings=settings.embeddings,
            vector_store=settings.vector_store,
            workspace=workspace,
        )
    with stages.timed("evaluate"):
        champion = find_champion(base=base, candidate_digest=quantized.digest, workspace=workspace)
        prompt = serving_prompt(name=settings.prompts.name, prompts_dir=str(settings.prompts_path), workspace=workspace)
        evaluation = stages.run_cached(
            "evaluate",
            evaluate_candidate,
            inputs=EvalInputs(
                candidate=quantized,
                champion=champion,
                snapshot=snapshot,
                index=index,
                embedder_weights=stage_fingerprints.embedder_weights,
                prompt=prompt,
            ),
            evaluation=settings.evaluation,
            embeddings=settings.embeddings,
            vector_store=settings.vector_store,
            workspace=workspace,
        )
    with stages.timed("drift"):
        drift = check_drift_here(
            stages=stages,
            settings=settings,
            workspace=workspace,
            snapshot=snapshot,
            embedder_weights=stage_fingerprints.embedder_weights,
        )
    with stages.timed("gate"):
        expected = ReleaseLineage(
            candidate=quantized.digest,
            champion=champion.digest,
            dataset=snapshot.digest,
            index=index.digest,
            prompt_version=prompt.version,
        )
        decision = gate(
            evaluation=evaluation,
            quant=quant_check,
            drift=drift,
            base=base,
            policy=policy,
            expected=expected,
            workspace=workspace,
        )
    if settings.gates.decision_mode == "manual":
        with stages.timed("approval"):
            decision = await_approval(decision, settings.gates.approval_timeout_s)
    emit_verdict(decision, settings.data.name)
    with stages.timed("promote"):
        promotion = promote(
            decision=decision,
            candidate=quantized,
            adapter=adapter,
            snapshot=snapshot,
            expected_production=champion.digest if champion.registered else None,
            workspace=workspace,
            dry_run=settings.gates.decision_mode == "dry_run",
            base=base,
            evaluation=evaluation,
        )
        if promotion.action == "promoted":
            keep_reference(snapshot=snapshot, embeddings=settings.embeddings, workspace=workspace)
    if settings.vector_store.switch == "after_gates" and promotion.action != "dry_run":
        switch_index_after_gates(
            vector_store=settings.vector_store,
            evaluated=index.collection,
            passed=decision.passed,
            workspace=workspace,
        )

    carded = decision.passed and promotion.action != "dry_run"  # promote wrote the candidate's card
    summary = ReleaseSummary(
        passed=decision.passed,
        unchanged=decision.unchanged,
        action=promotion.action,
        reasons=list(promotion.reasons if promotion.action == "dry_run" else decision.reasons),
        production=promotion.model_digest,
        candidate=quantized.digest,
        dataset=snapshot.digest,
        metrics=decision.metrics,
        baseline=decision.baseline,
        paired={m: d.describe() for m, d in decision.paired.items()},
        decision=decision.digest,
        policy=decision.policy_digest,
        checks=[f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in decision.checks],
        trigger=params.dataset_digest,
        timings_s={k: round(v, 2) for k, v in stages.seconds.items()},
        cached=stages.cached,
        outputs={
            "dataset": snapshot.path,
            "adapter": adapter.path,
            "quantized": quantized.path,
            "index": f"{index.uri}#{index.collection}",
            "eval_rows": evaluation.rows_path,
            "drift_html": drift.html_path or "",
            "registry": str(workspace.registry_root / "state.json"),
            "model_card": str(card_path(workspace.reports, quantized.digest)) if carded else "",
        },
    )
    create_markdown_artifact(
        key="release-summary",
        markdown=summary_markdown(summary),
        description="What ran, what was produced, and the gate decision",
    )
    if not summary.passed and not summary.unchanged and promotion.action != "dry_run":
        # A rejected candidate fails the run: a red run in the UI, not a green one that says "rejected".
        # One that answers exactly as production does is no change, and the run ends green.
        raise GateRejected("gate rejected the candidate: " + "; ".join(summary.reasons), details=summary)
    said = "PASSED" if summary.passed else "NO CHANGE" if summary.unchanged else "REJECTED (dry run)"
    logger.info("release %s: %s", said, "; ".join(summary.reasons))
    return summary


def summary_markdown(summary: ReleaseSummary) -> str:
    """The end-of-run report shown in the UI and printed by the CLI."""
    if summary.action == "dry_run":
        verdict = f"DRY RUN ({'would pass' if summary.passed else 'would be rejected'}), nothing moved"
    elif summary.action == "promoted":
        verdict = "PASSED, promoted to production"
    elif summary.passed:
        verdict = "PASSED (already in production)"
    else:
        verdict = "NO CHANGE, production kept" if summary.unchanged else "REJECTED, production unchanged"
    lines = [
        f"# Release: {verdict}",
        "",
        "## Why",
        "",
        *(f"- {r}" for r in summary.reasons),
        "",
        "## Metrics (challenger vs champion)",
        "",
        "| metric | challenger | champion |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {v:.3f} | {summary.baseline.get(m, float('nan')):.3f} |" for m, v in summary.metrics.items()]
    if summary.paired:
        lines += ["", "## Paired gain (same questions, challenger minus champion)", ""]
        lines += [f"- {m}: {d}" for m, d in summary.paired.items()]
    if summary.checks:
        lines += ["", "## Gate checks", ""] + [f"- {c}" for c in summary.checks]
        lines += ["", f"Decision `{summary.decision}` under policy `{summary.policy}`."]
    lines += timings_and_outputs(summary.timings_s, summary.cached, summary.outputs)
    if summary.trigger:
        lines += ["", f"Started by a data change event (fingerprint `{summary.trigger}`)."]
    return "\n".join(lines) + "\n"

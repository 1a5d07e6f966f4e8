"""Promotion gates: a policy over the stage reports that returns a typed decision.

The gate fails closed: a missing report, a NaN, a report about another model, dataset,
index or prompt, or a metric it cannot find is a failed check, never a pass by default.
The comparison is paired (the same questions answered by both models) and judged by the
confidence interval of the mean difference, not by the difference of two means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lockgate.digest import digest_json, short
from lockgate.errors import LockgateError
from lockgate.judge import judged_checks
from lockgate.metrics import JUDGED_METRICS
from lockgate.policy import GatePolicy, LicensePolicy, SlicePolicy
from lockgate.records import (
    BaseModelArtifact,
    DriftReport,
    EvalReport,
    GateCheck,
    GateDecision,
    Promotion,
    QuantCheck,
    ReleaseLineage,
)
from lockgate.stats import PairedDifference, paired_difference

if TYPE_CHECKING:
    from lockgate.artifacts import ArtifactStore

# The file a committed gate decision is kept in (``decisions/<address>/decision.json``).
DECISION_FILE = "decision.json"


class DecisionMismatch(LockgateError):
    """The gate decision recorded for a model is unreadable, about another model, or not a pass."""


def decide(
    evaluation: EvalReport | None,
    quant: QuantCheck | None,
    drift: DriftReport | None,
    policy: GatePolicy,
    expected: ReleaseLineage,
    revoked: str | None = None,
    champion_in_production: bool = False,
) -> GateDecision:
    """Apply the policy; ``passed`` only if every check passed and none was skipped for lack of input.

    The rules about the reports; a model release also answers for its base model's license, so the
    release flow decides with ``decide_release``. Simulations (``lockgate.calibration``) and
    prompt-only releases (production's model, checked when it was released) use this directly.

    Args:
        expected: what the reports must be about (candidate, champion, dataset, index, prompt).
        revoked: why the candidate was taken out of production before (a rollback), if it was;
            such a model is never promoted again automatically.
        champion_in_production: the champion is the production model (not the base model of a first
            release). A candidate that then answers every question exactly as the champion, and fails
            only the primary metric's comparison (no gain, as it cannot have any), is ``unchanged``:
            not promoted and not a rejection (``unchanged_check``).
    """
    checks: list[GateCheck] = []
    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    paired: dict[str, PairedDifference] = {}

    if expected.candidate is None:
        checks.append(GateCheck(name="candidate", passed=False, detail="no candidate model"))
    checks.extend(lineage_checks(expected, evaluation, quant, drift))
    if revoked is not None:
        checks.append(GateCheck(name="not-revoked", passed=False, detail=f"candidate was rolled back: {revoked}"))

    if evaluation is None:
        checks.append(GateCheck(name="evaluation", passed=False, detail="no evaluation report"))
    else:
        metrics = {m: s.mean for m, s in evaluation.challenger.metrics.items()}
        baseline = {m: s.mean for m, s in evaluation.champion.metrics.items()}
        primary, primary_checks = _primary_checks(evaluation, policy)
        checks.extend(primary_checks)
        if primary is not None:
            paired[policy.primary_metric] = primary
        if policy.slices is not None:
            checks.extend(_slice_checks(evaluation, policy, policy.slices))
        checks.extend(_floor_checks(evaluation, policy))
        checks.extend(judged_checks(evaluation))  # LLM-judged metrics, when a judge scored: none may be missing

    if policy.require_quant_check:
        checks.append(_quant_check(quant))
    if policy.block_on_drift:
        checks.append(_drift_check(drift))

    passed = bool(checks) and all(c.passed for c in checks)
    unchanged = False
    if not passed and champion_in_production and evaluation is not None:
        same = unchanged_check(evaluation, expected)
        primary_check = f"{policy.mode}:{policy.primary_metric}"
        unchanged = same.passed and all(c.passed for c in checks if c.name != primary_check)
        if unchanged:
            checks.append(same)
    reasons = tuple(c.detail for c in checks if not c.passed) or ("all checks passed",)
    if unchanged:
        reasons = (checks[-1].detail, *reasons)
    parents = tuple(r.digest for r in (evaluation, quant, drift) if r is not None)
    digest = digest_json(
        {
            "parents": parents,
            "policy": policy.digest,
            "lineage": expected.model_dump(),
            "revoked": revoked,
            "unchanged": unchanged,
        }
    )
    return GateDecision(
        digest=digest,
        parents=parents,
        passed=passed,
        reasons=reasons,
        checks=tuple(checks),
        metrics=metrics,
        baseline=baseline,
        candidate_digest=expected.candidate,
        policy_digest=policy.digest,
        lineage=expected,
        paired=paired,
        unchanged=unchanged,
    )


def unchanged_check(evaluation: EvalReport, expected: ReleaseLineage) -> GateCheck:
    """The check named ``no-change``: every eval question answered exactly as the champion answered it.

    A rerun that retrains the same data on another worker gets a new digest (CPU training is not
    bit-reproducible across processes) and, often, the very same answers; that is no gain, and no
    loss either.
    """
    n, same = evaluation.n_questions, evaluation.same_answers
    if n > 0 and same == n:
        detail = (
            f"no change: the candidate answers all {n} eval questions exactly as production "
            f"{short(expected.champion or '')} does; production kept"
        )
        return GateCheck(name="no-change", passed=True, detail=detail)
    return GateCheck(name="no-change", passed=False, detail=f"{n - same} of {n} answers differ from production's")


def decide_release(
    *,
    evaluation: EvalReport | None,
    quant: QuantCheck | None,
    drift: DriftReport | None,
    base: BaseModelArtifact | None,
    policy: GatePolicy,
    expected: ReleaseLineage,
    revoked: str | None = None,
    champion_in_production: bool = False,
) -> GateDecision:
    """``decide`` for a model release: the same checks, plus the base model's license (``license``).

    No base model given is a failed check, as any missing input is; ``licenses: null`` in the
    policy is the only way to skip it. A license the policy refuses is a rejection even when
    the candidate is otherwise ``unchanged``.
    """
    decision = decide(
        evaluation, quant, drift, policy, expected, revoked=revoked, champion_in_production=champion_in_production
    )
    if policy.licenses is None:
        return decision
    check = license_check(base, policy.licenses)
    checks = (*decision.checks, check)
    passed = decision.passed and check.passed
    unchanged = decision.unchanged and check.passed
    reasons = tuple(c.detail for c in checks if not c.passed) or ("all checks passed",)
    if unchanged:
        reasons = (decision.reasons[0], *reasons)
    seen = {"digest": base.digest, "license": base.license} if base is not None else None
    digest = digest_json({"decision": decision.digest, "base": seen})
    parents = (*decision.parents, base.digest) if base is not None else decision.parents
    return decision.model_copy(
        update={
            "digest": digest,
            "parents": parents,
            "checks": checks,
            "passed": passed,
            "reasons": reasons,
            "unchanged": unchanged,
        }
    )


def license_check(base: BaseModelArtifact | None, licenses: LicensePolicy) -> GateCheck:
    """The check named ``license``: the base model's license must be one the policy lists."""
    allowed = ", ".join(licenses.allowed)
    if base is None:
        return GateCheck(name="license", passed=False, detail="no base model given: its license is unknown")
    if base.license is None:
        detail = f"base model {base.name} has no known license; the policy allows only {allowed}"
        return GateCheck(name="license", passed=False, detail=detail)
    if not licenses.allows(base.license):
        detail = f"base model {base.name} is licensed {base.license}, which the policy does not allow ({allowed})"
        return GateCheck(name="license", passed=False, detail=detail)
    return GateCheck(name="license", passed=True, detail=f"base model {base.name} is licensed {base.license}")


def decide_prompt(
    evaluation: EvalReport | None,
    policy: GatePolicy,
    expected: ReleaseLineage,
    champion_prompt: str,
    revoked: str | None = None,
) -> GateDecision:
    """``decide`` for a candidate prompt against the production prompt, both with production's model.

    Adds one lineage check: the evaluation's champion answered with the production prompt
    ``champion_prompt`` (a version), so a report about another pair of prompts cannot decide.
    """
    decision = decide(evaluation, None, None, policy, expected, revoked=revoked)
    seen = evaluation.champion.label if evaluation is not None else None
    ok = seen is not None and seen.endswith(champion_prompt)
    check = GateCheck(
        name="evaluation-champion-prompt",
        passed=ok,
        detail=f"the champion answered with {champion_prompt}"
        if ok
        else f"the evaluated champion is {seen!r}, but this release's production prompt is {champion_prompt}",
    )
    checks = (*decision.checks, check)
    passed = decision.passed and ok
    reasons = tuple(c.detail for c in checks if not c.passed) or ("all checks passed",)
    digest = digest_json({"decision": decision.digest, "champion_prompt": champion_prompt})
    return decision.model_copy(update={"digest": digest, "checks": checks, "passed": passed, "reasons": reasons})


def lineage_checks(
    expected: ReleaseLineage, evaluation: EvalReport | None, quant: QuantCheck | None, drift: DriftReport | None
) -> list[GateCheck]:
    """Reports about some other model, champion, dataset, index or prompt must not decide this release."""
    checks: list[GateCheck] = []

    def same(name: str, what: str, seen: str | None, wanted: str | None) -> None:
        if seen != wanted:
            checks.append(
                GateCheck(
                    name=name,
                    passed=False,
                    detail=f"{what} is {_show(seen)}, but this release's is {_show(wanted)}",
                )
            )

    if evaluation is not None:
        same("evaluation-subject", "the evaluated challenger", evaluation.challenger.model_id, expected.candidate)
        same("evaluation-champion", "the evaluated champion", evaluation.champion.model_id, expected.champion)
        same("evaluation-dataset", "the evaluation's dataset", evaluation.dataset_digest, expected.dataset)
        same("evaluation-index", "the evaluation's index build", evaluation.index_digest, expected.index)
        same("evaluation-prompt", "the evaluation's prompt version", evaluation.prompt_version, expected.prompt_version)
    if quant is not None:
        checked = quant.parents[0] if quant.parents else None
        same("quantization-subject", "the quantization check's model", checked, expected.candidate)
    if drift is not None:
        same("drift-dataset", "the drift report's dataset", drift.dataset_digest, expected.dataset)
    return checks


def _show(digest: str | None) -> str:
    if digest is None:
        return "unknown"
    return short(digest) if digest.startswith("sha256:") else digest


def _primary_checks(evaluation: EvalReport, policy: GatePolicy) -> tuple[PairedDifference | None, list[GateCheck]]:
    name = policy.primary_metric
    scores = evaluation.per_question.get(name)
    if scores is None:
        return None, [GateCheck(name=f"{policy.mode}:{name}", passed=False, detail=_missing(name))]
    diff = paired_difference(
        scores.challenger, scores.champion, policy.confidence, policy.bootstrap_samples, policy.seed
    )
    checks = [
        GateCheck(
            name="min-questions",
            passed=diff.n >= policy.min_questions,
            detail=f"{diff.n} paired questions {'>=' if diff.n >= policy.min_questions else '<'} "
            f"the {policy.min_questions} the policy requires",
        )
    ]
    if not diff.is_valid:
        why = f": {name} is judged by an LLM and the judge left scores missing" if name in JUDGED_METRICS else ""
        checks.append(
            GateCheck(name=f"{policy.mode}:{name}", passed=False, detail=f"{name} difference is {diff.describe()}{why}")
        )
        return diff, checks
    if policy.mode == "superiority":
        ok = diff.ci_low >= policy.min_improvement and diff.mean > 0
        rule = f"lower end {'>=' if diff.ci_low >= policy.min_improvement else '<'} {policy.min_improvement:+.3f}"
        if diff.ci_low >= policy.min_improvement and diff.mean <= 0:
            rule += ", but no gain at all"
    else:
        ok = diff.ci_low >= -policy.max_regression
        rule = f"lower end {'>=' if ok else '<'} {0.0 - policy.max_regression:+.3f}"
    checks.append(
        GateCheck(name=f"{policy.mode}:{name}", passed=ok, detail=f"{name} paired gain {diff.describe()}: {rule}")
    )
    return diff, checks


def _slice_checks(evaluation: EvalReport, policy: GatePolicy, slices: SlicePolicy) -> list[GateCheck]:
    labels = evaluation.slice_labels.get(slices.field)
    scores = evaluation.per_question.get(policy.primary_metric)
    if scores is None:  # the primary check already rejects, naming why
        return [GateCheck(name=f"slices:{slices.field}", passed=False, detail=f"no {policy.primary_metric} to slice")]
    if labels is None or len(labels) != len(scores.challenger):
        known = sorted(evaluation.slice_labels)
        return [
            GateCheck(
                name=f"slices:{slices.field}",
                passed=False,
                detail=f"the evaluation has no slice labels '{slices.field}' for its questions (has {known})",
            )
        ]
    members: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    checks = []
    for k, (label, idx) in enumerate(sorted(members.items())):
        if len(idx) < slices.min_size:
            continue
        diff = paired_difference(
            [scores.challenger[i] for i in idx],
            [scores.champion[i] for i in idx],
            slices.confidence,
            policy.bootstrap_samples,
            policy.seed + 1 + k,
        )
        vetoed = not diff.is_valid or diff.ci_high < -slices.max_regression
        checks.append(
            GateCheck(
                name=f"slice:{slices.field}={label}",
                passed=not vetoed,
                detail=f"slice {slices.field}={label}: {policy.primary_metric} paired gain {diff.describe()}"
                + (f", significantly below {0.0 - slices.max_regression:+.3f}: veto" if vetoed else ""),
            )
        )
    return checks


def _floor_checks(evaluation: EvalReport, policy: GatePolicy) -> list[GateCheck]:
    checks = []
    for metric, floor in sorted(policy.min_scores.items()):
        summary = evaluation.challenger.metrics.get(metric)
        value = summary.mean if summary is not None and summary.is_valid else None
        ok = value is not None and math.isfinite(value) and value >= floor
        shown = "missing or not a number" if value is None else f"{value:.3f}"
        detail = f"{metric} {shown} {'>=' if ok else 'below or invalid vs'} floor {floor}"
        if value is None and metric in JUDGED_METRICS:
            why = (
                _missing(metric) if summary is None else f"{metric} is not a number: the LLM judge left scores missing"
            )
            detail = f"{why}; floor {floor}"
        checks.append(GateCheck(name=f"floor:{metric}", passed=ok, detail=detail))
    return checks


def _missing(metric: str) -> str:
    if metric in JUDGED_METRICS:
        return (
            f"{metric} missing: it is judged by an LLM and no judge scored this evaluation "
            "(set evaluation.judge_base_url)"
        )
    return f"metric {metric} missing"


def _quant_check(quant: QuantCheck | None) -> GateCheck:
    if quant is None:
        return GateCheck(name="quantization", passed=False, detail="no quantization check")
    detail = f"size ratio {quant.size_ratio:.2f}, loss {quant.merged_eval_loss:.3f} -> {quant.quantized_eval_loss:.3f}"
    if not quant.passed:
        detail += "; " + "; ".join(quant.reasons)
    return GateCheck(name="quantization", passed=quant.passed, detail=detail)


def _drift_check(drift: DriftReport | None) -> GateCheck:
    if drift is None:
        return GateCheck(name="drift", passed=False, detail="no drift report")
    ok = not drift.drifted and math.isfinite(drift.score)
    return GateCheck(
        name="drift",
        passed=ok,
        detail=f"{drift.method} score {drift.score:.4f} {'<=' if ok else '>'} threshold {drift.threshold}",
    )


class Approval(BaseModel):
    """A person's answer to a gate that passed in manual mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approve: bool
    reviewer: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)


def promotion_evidence(decision: GateDecision) -> dict[str, Any]:
    """What the registry keeps of the gate's verdict beside a model or prompt version it moves."""
    return {
        "gate": decision.digest,
        "policy": decision.policy_digest,
        "passed": decision.passed,
        "metrics": decision.metrics,
        "lineage": decision.lineage.model_dump(),
        "approval": next((c.detail for c in decision.checks if c.name == "approval"), None),
        "license": next((c.detail for c in decision.checks if c.name == "license"), None),
    }


def commit_decision(decision: GateDecision, store: ArtifactStore) -> Path:
    """Keep the gate's decision as an artifact, signed like the model it judged when the store signs.

    The registry's evidence repeats parts of it, but the registry's state file is one JSON file
    anyone who can write the folder can edit; the committed decision is what ``lockgate verify``
    checks a promoted model against: this digest, passed, under this policy.
    """
    staged = store.staging("decisions")
    (staged / DECISION_FILE).write_text(decision.model_dump_json(indent=1), encoding="utf-8")
    return store.commit("decisions", staged, decision.digest)[1]


def read_decision(folder: Path, model_digest: str) -> GateDecision:
    """The committed decision in ``folder``, checked to be a pass about ``model_digest``.

    Raises:
        DecisionMismatch: the file is missing or unreadable, names another model, or did not pass.
    """
    path = folder / DECISION_FILE
    try:
        decision = GateDecision.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DecisionMismatch(f"gate decision {path} cannot be read: {str(exc).splitlines()[0]}") from None
    if decision.candidate_digest != model_digest:
        raise DecisionMismatch(
            f"gate decision {path} is about {_show(decision.candidate_digest)}, not {_show(model_digest)}"
        )
    if not decision.passed:
        raise DecisionMismatch(f"gate decision {path} rejected {_show(model_digest)}: {'; '.join(decision.reasons)}")
    return decision


def with_approval(decision: GateDecision, approval: Approval | None, timeout_s: int) -> GateDecision:
    """The decision with a person's verdict added as one more check.

    No answer (``approval`` None, the wait timed out) is a rejection: manual mode never
    promotes by default.
    """
    if approval is None:
        check = GateCheck(name="approval", passed=False, detail=f"no approval within {timeout_s} s: rejected")
    else:
        said = "approved" if approval.approve else "rejected"
        note = f": {approval.comment}" if approval.comment else ""
        check = GateCheck(name="approval", passed=approval.approve, detail=f"{said} by {approval.reviewer}{note}")
    checks = (*decision.checks, check)
    passed = decision.passed and check.passed
    reasons = tuple(c.detail for c in checks if not c.passed) or ("all checks passed",)
    digest = digest_json({"decision": decision.digest, "approval": approval.model_dump() if approval else None})
    return decision.model_copy(update={"digest": digest, "checks": checks, "passed": passed, "reasons": reasons})


def verdict_word(decision: GateDecision) -> str:
    """PASSED, NO CHANGE or REJECTED."""
    return "PASSED" if decision.passed else "NO CHANGE" if decision.unchanged else "REJECTED"


def promotion_outcome(
    decision: GateDecision, action: str, previous: str | None, candidate: str, dry_run: bool = False
) -> Promotion:
    """What a release did to ``production``, given what the registry answered."""
    if dry_run:
        verdict = "would promote" if decision.passed else "would keep production"
        return Promotion(
            action="dry_run",
            alias="production",
            model_digest=previous,
            previous_digest=previous,
            reasons=(f"dry run: {verdict}; nothing moved", *decision.reasons),
        )
    if action == "promoted":
        return Promotion(
            action="promoted",
            alias="production",
            model_digest=candidate,
            previous_digest=previous,
            reasons=decision.reasons,
        )
    reasons = decision.reasons if not decision.passed else ("already in production",)
    return Promotion(
        action="kept", alias="production", model_digest=previous, previous_digest=previous, reasons=reasons
    )

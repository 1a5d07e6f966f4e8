"""Promotion gates: a policy over the stage reports that returns a typed decision.

The gate fails closed: a missing report, a NaN, or a metric it cannot find is a failed
check, never a pass by default.
"""

from __future__ import annotations

import math

from lockgate.digest import digest_json
from lockgate.records import DriftReport, EvalReport, GateCheck, GateDecision, QuantCheck
from lockgate.settings import GateSettings


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def decide(
    evaluation: EvalReport | None,
    quant: QuantCheck | None,
    drift: DriftReport | None,
    policy: GateSettings,
    candidate_digest: str | None,
    revoked: str | None = None,
) -> GateDecision:
    """Apply the policy; ``passed`` only if every check passed and none was skipped for lack of input.

    Args:
        revoked: why the candidate was taken out of production before (a rollback), if it was;
            such a model is never promoted again automatically.
    """
    checks: list[GateCheck] = []
    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}

    if candidate_digest is None:
        checks.append(GateCheck(name="candidate", passed=False, detail="no candidate model"))
    else:
        checks.extend(_about_the_candidate(candidate_digest, evaluation, quant))
    if revoked is not None:
        checks.append(GateCheck(name="not-revoked", passed=False, detail=f"candidate was rolled back: {revoked}"))

    if evaluation is None:
        checks.append(GateCheck(name="evaluation", passed=False, detail="no evaluation report"))
    else:
        metrics = {m: s.mean for m, s in evaluation.challenger.metrics.items()}
        baseline = {m: s.mean for m, s in evaluation.champion.metrics.items()}
        name = policy.primary_metric
        chall = evaluation.challenger.metrics.get(name)
        champ = evaluation.champion.metrics.get(name)
        if chall is None or champ is None:
            checks.append(GateCheck(name=f"improves:{name}", passed=False, detail=f"metric {name} missing"))
        elif not (chall.is_valid and champ.is_valid):
            checks.append(
                GateCheck(
                    name=f"improves:{name}",
                    passed=False,
                    detail=f"{name} is not a number (challenger {chall.mean}, champion {champ.mean})",
                )
            )
        else:
            gain = chall.mean - champ.mean
            ok = gain >= policy.min_improvement
            checks.append(
                GateCheck(
                    name=f"improves:{name}",
                    passed=ok,
                    detail=(
                        f"{name} {chall.mean:.3f} [{chall.ci_low:.3f}, {chall.ci_high:.3f}] vs champion "
                        f"{champ.mean:.3f}: gain {gain:+.3f} {'>=' if ok else '<'} required {policy.min_improvement}"
                    ),
                )
            )
        for metric, floor in sorted(policy.min_scores.items()):
            summary = evaluation.challenger.metrics.get(metric)
            value = summary.mean if summary is not None else None
            ok = summary is not None and summary.is_valid and _finite(value) and value is not None and value >= floor
            checks.append(
                GateCheck(
                    name=f"floor:{metric}",
                    passed=ok,
                    detail=f"{metric} {value if value is None else round(value, 3)} "
                    f"{'>=' if ok else 'below or invalid vs'} floor {floor}",
                )
            )

    if policy.require_quant_check:
        if quant is None:
            checks.append(GateCheck(name="quantization", passed=False, detail="no quantization check"))
        else:
            detail = (
                f"size ratio {quant.size_ratio:.2f}, loss {quant.merged_eval_loss:.3f} -> "
                f"{quant.quantized_eval_loss:.3f}"
            )
            if not quant.passed:
                detail += "; " + "; ".join(quant.reasons)
            checks.append(GateCheck(name="quantization", passed=quant.passed, detail=detail))

    if policy.block_on_drift:
        if drift is None:
            checks.append(GateCheck(name="drift", passed=False, detail="no drift report"))
        else:
            ok = not drift.drifted and math.isfinite(drift.score)
            checks.append(
                GateCheck(
                    name="drift",
                    passed=ok,
                    detail=f"{drift.method} score {drift.score:.4f} {'<=' if ok else '>'} threshold {drift.threshold}",
                )
            )

    passed = bool(checks) and all(c.passed for c in checks)
    reasons = tuple(c.detail for c in checks if not c.passed) or ("all checks passed",)
    parents = tuple(r.digest for r in (evaluation, quant, drift) if r is not None)
    digest = digest_json({"parents": parents, "policy": policy.model_dump(), "candidate": candidate_digest})
    return GateDecision(
        digest=digest,
        parents=parents,
        passed=passed,
        reasons=reasons,
        checks=tuple(checks),
        metrics=metrics,
        baseline=baseline,
        candidate_digest=candidate_digest,
    )


def _about_the_candidate(candidate: str, evaluation: EvalReport | None, quant: QuantCheck | None) -> list[GateCheck]:
    """Reports about some other model must not decide this one."""
    checks = []
    if evaluation is not None and evaluation.challenger.model_id != candidate:
        checks.append(
            GateCheck(
                name="evaluation-subject",
                passed=False,
                detail=f"evaluation scored {evaluation.challenger.model_id[:19]}, not the candidate",
            )
        )
    if quant is not None and quant.parents[:1] != (candidate,):
        checks.append(
            GateCheck(
                name="quantization-subject",
                passed=False,
                detail="quantization check is of another model than the candidate",
            )
        )
    return checks

from __future__ import annotations

import math

from lockgate.gates import decide
from lockgate.records import DriftReport, EvalReport, MetricSummary, ModelScores, QuantCheck
from lockgate.settings import GateSettings


def summary(mean: float) -> MetricSummary:
    return MetricSummary(mean=mean, ci_low=mean - 0.05, ci_high=mean + 0.05, n=50)


def report(challenger: float, champion: float, model: str = "c") -> EvalReport:
    def scores(v: float, label: str) -> ModelScores:
        return ModelScores(model_id=label, label=label, metrics={"rouge_l": summary(v), "bleu": summary(v)})

    return EvalReport(
        digest="sha256:e",
        prompt_version="p@1",
        challenger=scores(challenger, model),
        champion=scores(champion, "b"),
        retrieval={},
        rows_path="/x",
        n_questions=50,
    )


def quant(passed: bool = True, model: str = "c") -> QuantCheck:
    return QuantCheck(
        digest="sha256:q",
        parents=(model,),
        passed=passed,
        reasons=() if passed else ("too big",),
        size_ratio=0.5,
        merged_eval_loss=1.0,
        quantized_eval_loss=1.01,
        loss_increase=0.01,
        merged_latency_ms=1.0,
        quantized_latency_ms=1.0,
        reloaded=True,
    )


def drift(score: float = 0.001) -> DriftReport:
    return DriftReport(
        digest="sha256:d",
        method="mmd",
        score=score,
        threshold=0.01,
        drifted=score > 0.01,
        n_reference=100,
        n_current=50,
        html_path=None,
    )


POLICY = GateSettings(primary_metric="rouge_l", min_improvement=0.05, min_scores={"rouge_l": 0.3})


def test_better_candidate_passes_with_metrics_and_baseline() -> None:
    d = decide(report(0.8, 0.1), quant(), drift(), POLICY, "c")
    assert d.passed, d.reasons
    assert d.metrics["rouge_l"] == 0.8 and d.baseline["rouge_l"] == 0.1
    assert d.candidate_digest == "c"


def test_no_improvement_is_rejected_with_reason() -> None:
    d = decide(report(0.5, 0.48), quant(), drift(), POLICY, "c")
    assert not d.passed
    assert any("gain +0.020 < required 0.05" in r for r in d.reasons)


def test_below_floor_is_rejected() -> None:
    d = decide(report(0.25, 0.0), quant(), drift(), POLICY, "c")
    assert not d.passed and any("floor" in c.name and not c.passed for c in d.checks)


def test_missing_inputs_fail_closed() -> None:
    for args in [(None, quant(), drift()), (report(0.9, 0.1), None, drift()), (report(0.9, 0.1), quant(), None)]:
        d = decide(*args, POLICY, "c")
        assert not d.passed and any("no " in r for r in d.reasons)
    assert not decide(report(0.9, 0.1), quant(), drift(), POLICY, None).passed


def test_nan_never_passes() -> None:
    d = decide(report(math.nan, 0.1), quant(), drift(), POLICY, "c")
    assert not d.passed
    d = decide(report(0.9, math.nan), quant(), drift(), POLICY, "c")
    assert not d.passed


def test_failed_quantization_and_drift_block() -> None:
    assert not decide(report(0.9, 0.1), quant(passed=False), drift(), POLICY, "c").passed
    assert not decide(report(0.9, 0.1), quant(), drift(0.5), POLICY, "c").passed
    lenient = POLICY.model_copy(update={"block_on_drift": False, "require_quant_check": False})
    assert decide(report(0.9, 0.1), quant(passed=False), drift(0.5), lenient, "c").passed


def test_unknown_metric_in_report_fails_closed() -> None:
    policy = POLICY.model_copy(update={"min_scores": {"chrf": 0.1}})
    d = decide(report(0.9, 0.1), quant(), drift(), policy, "c")
    assert not d.passed and any(c.name == "floor:chrf" and not c.passed for c in d.checks)


def test_reports_about_another_model_fail_closed() -> None:
    assert not decide(report(0.9, 0.1, model="other"), quant(), drift(), POLICY, "c").passed
    assert not decide(report(0.9, 0.1), quant(model="other"), drift(), POLICY, "c").passed


def test_a_rolled_back_model_is_not_promoted_again() -> None:
    d = decide(report(0.9, 0.1), quant(), drift(), POLICY, "c", revoked="canary errors")
    assert not d.passed and any("rolled back: canary errors" in r for r in d.reasons)

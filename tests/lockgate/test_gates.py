from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lockgate.calibration import mean_rule_rate, promotion_rate, simulated_report
from lockgate.errors import ConfigError
from lockgate.gates import (
    Approval,
    decide,
    decide_prompt,
    decide_release,
    promotion_evidence,
    promotion_outcome,
    verdict_word,
    with_approval,
)
from lockgate.policy import GatePolicy, LicensePolicy, SlicePolicy, explain, load_policy, prompt_policy
from lockgate.records import BaseModelArtifact, DriftReport, EvalReport, QuantCheck, ReleaseLineage
from tests.conftest import ROOT

LINEAGE = ReleaseLineage(candidate="c", champion="b", dataset="d", index="i", prompt_version="p@1")
POLICY = GatePolicy(min_scores={"rouge_l": 0.3}, slices=SlicePolicy(field="type", min_size=10))


def report(
    gain: float = 0.3, base_score: float = 0.4, n: int = 60, sd: float = 0.05, seed: int = 0, **lineage: str
) -> EvalReport:
    rng = np.random.default_rng(seed)
    diffs = rng.normal(gain, sd, n)
    labels = [f"t{i % 3}" for i in range(n)]
    base = simulated_report(diffs, np.full(n, base_score), labels, "type")
    update = {
        "dataset_digest": lineage.get("dataset", "d"),
        "index_digest": lineage.get("index", "i"),
        "prompt_version": lineage.get("prompt", "p@1"),
        "challenger": base.challenger.model_copy(update={"model_id": lineage.get("challenger", "c")}),
        "champion": base.champion.model_copy(update={"model_id": lineage.get("champion", "b")}),
    }
    return base.model_copy(update=update)


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


def drift(score: float = 0.001, dataset: str | None = "d") -> DriftReport:
    return DriftReport(
        digest="sha256:d",
        dataset_digest=dataset,
        method="mmd",
        score=score,
        threshold=0.01,
        drifted=score > 0.01,
        n_reference=100,
        n_current=50,
        html_path=None,
    )


def base_model(license: str | None = "apache-2.0") -> BaseModelArtifact:
    return BaseModelArtifact(
        digest="sha256:base", name="org/base-lm", path="/b", hidden_size=64, parameters=1000, license=license
    )


def release_decision(base: BaseModelArtifact | None, policy: GatePolicy = POLICY):  # type: ignore[no-untyped-def]
    return decide_release(evaluation=report(), quant=quant(), drift=drift(), base=base, policy=policy, expected=LINEAGE)


def failed(decision) -> set[str]:  # type: ignore[no-untyped-def]
    return {c.name for c in decision.checks if not c.passed}


def test_better_candidate_passes_with_paired_interval_and_policy_digest() -> None:
    d = decide(report(), quant(), drift(), POLICY, LINEAGE)
    assert d.passed, d.reasons
    gain = d.paired["rouge_l"]
    assert gain.ci_low > 0.25 and gain.ci_high < 0.35 and gain.n == 60
    assert d.metrics["rouge_l"] == pytest.approx(0.7, abs=0.02) and d.baseline["rouge_l"] == pytest.approx(0.4)
    assert d.policy_digest == POLICY.digest and d.lineage == LINEAGE
    assert decide(report(), quant(), drift(), POLICY, LINEAGE).digest == d.digest, "deterministic"


def test_a_gain_inside_the_noise_is_rejected_though_the_mean_rose() -> None:
    d = decide(report(gain=0.03, sd=0.3, base_score=0.5), quant(), drift(), POLICY, LINEAGE)
    assert d.metrics["rouge_l"] > d.baseline["rouge_l"]
    assert not d.passed and "superiority:rouge_l" in failed(d)
    assert any("lower end <" in r for r in d.reasons)


def test_non_inferiority_accepts_an_equal_twin_and_rejects_a_worse_one() -> None:
    twin = GatePolicy(mode="non_inferiority", max_regression=0.05, slices=None)
    assert decide(report(gain=0.0, sd=0.05), quant(), drift(), twin, LINEAGE).passed
    worse = decide(report(gain=-0.1, sd=0.05), quant(), drift(), twin, LINEAGE)
    assert not worse.passed and "non_inferiority:rouge_l" in failed(worse)
    superiority = GatePolicy(slices=None)
    assert not decide(report(gain=0.0, sd=0.0), quant(), drift(), superiority, LINEAGE).passed, "no gain, no promotion"


def test_too_few_questions_is_a_rejection_with_that_reason() -> None:
    d = decide(report(n=20), quant(), drift(), POLICY, LINEAGE)
    assert not d.passed and failed(d) == {"min-questions"}
    assert "20 paired questions < the 30" in d.reasons[0]


def test_a_slice_significantly_worse_vetoes_a_better_mean() -> None:
    rng = np.random.default_rng(3)
    labels = ["bad"] * 15 + ["good"] * 45
    diffs = np.concatenate([rng.normal(-0.2, 0.05, 15), rng.normal(0.3, 0.05, 45)])
    r = simulated_report(diffs, np.full(60, 0.5), labels, "type")
    d = decide(r, None, None, POLICY.model_copy(update={"require_quant_check": False, "block_on_drift": False}), _sim())
    assert d.paired["rouge_l"].ci_low > 0, "better overall"
    assert not d.passed and failed(d) == {"slice:type=bad"}
    assert "veto" in d.reasons[0]
    small = POLICY.model_copy(update={"slices": SlicePolicy(field="type", min_size=16)})
    d = decide(r, None, None, small.model_copy(update={"require_quant_check": False, "block_on_drift": False}), _sim())
    assert d.passed, "a slice under min_size is reported, never vetoed"


def _sim() -> ReleaseLineage:
    return ReleaseLineage(
        candidate="sim:challenger", champion="sim:champion", dataset="sim:data", index="sim:index", prompt_version="sim"
    )


def test_missing_slice_labels_fail_closed() -> None:
    policy = POLICY.model_copy(update={"slices": SlicePolicy(field="source_doc")})
    d = decide(report(), quant(), drift(), policy, LINEAGE)
    assert not d.passed and failed(d) == {"slices:source_doc"}


def test_below_floor_is_rejected() -> None:
    d = decide(report(gain=0.1, base_score=0.1, sd=0.02), quant(), drift(), POLICY, LINEAGE)
    assert not d.passed and failed(d) == {"floor:rouge_l"}


def test_missing_inputs_fail_closed() -> None:
    for args in [(None, quant(), drift()), (report(), None, drift()), (report(), quant(), None)]:
        d = decide(*args, POLICY, LINEAGE)
        assert not d.passed and any("no " in r for r in d.reasons)
    no_candidate = LINEAGE.model_copy(update={"candidate": None})
    assert not decide(report(), quant(), drift(), POLICY, no_candidate).passed


def test_nan_never_passes() -> None:
    r = report()
    scores = r.per_question["rouge_l"]
    broken = scores.model_copy(update={"challenger": (math.nan, *scores.challenger[1:])})
    d = decide(r.model_copy(update={"per_question": {"rouge_l": broken}}), quant(), drift(), POLICY, LINEAGE)
    assert not d.passed and "not a number" in " ".join(d.reasons)


def test_failed_quantization_and_drift_block() -> None:
    assert failed(decide(report(), quant(passed=False), drift(), POLICY, LINEAGE)) == {"quantization"}
    assert failed(decide(report(), quant(), drift(0.5), POLICY, LINEAGE)) == {"drift"}
    lenient = POLICY.model_copy(update={"block_on_drift": False, "require_quant_check": False})
    assert decide(report(), quant(passed=False), drift(0.5), lenient, LINEAGE).passed


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"challenger": "other"}, "evaluation-subject"),
        ({"champion": "someone-else"}, "evaluation-champion"),
        ({"dataset": "old-data"}, "evaluation-dataset"),
        ({"index": "old-index"}, "evaluation-index"),
        ({"prompt": "p@2"}, "evaluation-prompt"),
    ],
)
def test_an_evaluation_of_anything_else_fails_closed(kwargs: dict[str, str], check: str) -> None:
    d = decide(report(**kwargs), quant(), drift(), POLICY, LINEAGE)
    assert not d.passed and failed(d) == {check}


def test_quant_check_and_drift_of_something_else_fail_closed() -> None:
    assert failed(decide(report(), quant(model="other"), drift(), POLICY, LINEAGE)) == {"quantization-subject"}
    assert failed(decide(report(), quant(), drift(dataset="old"), POLICY, LINEAGE)) == {"drift-dataset"}
    assert failed(decide(report(), quant(), drift(dataset=None), POLICY, LINEAGE)) == {"drift-dataset"}


def test_a_rolled_back_model_is_not_promoted_again() -> None:
    d = decide(report(), quant(), drift(), POLICY, LINEAGE, revoked="canary errors")
    assert not d.passed and any("rolled back: canary errors" in r for r in d.reasons)


def test_approval_is_one_more_check_and_silence_rejects() -> None:
    d = decide(report(), quant(), drift(), POLICY, LINEAGE)
    yes = with_approval(d, Approval(approve=True, reviewer="ana", comment="looks good"), 60)
    assert yes.passed and yes.checks[-1].detail == "approved by ana: looks good" and yes.digest != d.digest
    no = with_approval(d, Approval(approve=False, reviewer="ana"), 60)
    assert not no.passed and no.reasons == ("rejected by ana",)
    silent = with_approval(d, None, 60)
    assert not silent.passed and "no approval within 60 s" in silent.reasons[0]


def test_the_prompt_gate_is_the_release_policy_in_the_prompts_mode_and_checks_the_champion_prompt() -> None:
    policy = prompt_policy(POLICY, "non_inferiority")
    assert policy.mode == "non_inferiority" and policy.digest != POLICY.digest
    assert (policy.slices, policy.min_scores) == (POLICY.slices, POLICY.min_scores), "the other rules as written"
    production = "p@production"
    neutral = report(gain=0.0, sd=0.01)
    neutral = neutral.model_copy(
        update={"champion": neutral.champion.model_copy(update={"label": f"production prompt {production}"})}
    )
    decision = decide_prompt(neutral, policy, LINEAGE, production)
    assert decision.passed, decision.reasons
    assert {"quantization", "drift"}.isdisjoint(c.name for c in decision.checks), "the model is production's"
    other = decide_prompt(neutral, policy, LINEAGE, "p@other")
    assert not other.passed and other.digest != decision.digest
    assert "production prompt is p@other" in " ".join(other.reasons)
    worse = report(gain=-0.1, sd=0.02).model_copy(update={"champion": neutral.champion})
    rejected = decide_prompt(worse, policy, LINEAGE, production)
    assert not rejected.passed and any(c.name == "non_inferiority:rouge_l" and not c.passed for c in rejected.checks)


def test_a_base_model_whose_license_is_not_listed_fails_the_named_license_check() -> None:
    ok = release_decision(base_model("apache-2.0"))
    assert ok.passed, ok.reasons
    assert [c.detail for c in ok.checks if c.name == "license"] == ["base model org/base-lm is licensed apache-2.0"]
    assert release_decision(base_model("Apache-2.0")).passed, "license ids compare case-insensitively"

    restricted = release_decision(base_model("llama3"))
    assert not restricted.passed and failed(restricted) == {"license"}, "every other check passed"
    assert restricted.reasons == (
        "base model org/base-lm is licensed llama3, which the policy does not allow "
        "(apache-2.0, mit, bsd-2-clause, bsd-3-clause, isc, cc0-1.0, cc-by-4.0)",
    )
    assert promotion_evidence(restricted)["license"] == restricted.reasons[0], "the registry keeps what it saw"
    unknown = release_decision(base_model(None))
    assert failed(unknown) == {"license"} and "has no known license" in unknown.reasons[0]
    missing = release_decision(None)
    assert failed(missing) == {"license"} and "no base model given" in missing.reasons[0], "fails closed"
    assert len({ok.digest, restricted.digest, unknown.digest, missing.digest}) == 4, "the license is decision input"


def test_a_policy_decides_which_licenses_and_null_switches_the_check_off() -> None:
    llama = POLICY.model_copy(update={"licenses": LicensePolicy(allowed=("Llama3", "apache-2.0"))})
    assert llama.licenses is not None and llama.licenses.allowed == ("llama3", "apache-2.0")
    assert release_decision(base_model("llama3"), llama).passed
    assert failed(release_decision(base_model("mit"), llama)) == {"license"}
    off = POLICY.model_copy(update={"licenses": None})
    assert off.digest != POLICY.digest, "the decision records which rule applied"
    unchecked = release_decision(base_model(None), off)
    assert unchecked.passed and "license" not in {c.name for c in unchecked.checks}
    assert "No license check" in explain(off)


def test_the_shipped_policy_allows_the_builtin_models_license_and_explains_why() -> None:
    policy = load_policy(ROOT / "policies" / "release.yaml")
    assert policy.licenses is not None and policy.licenses.allows("apache-2.0") and policy.licenses.allows("MIT")
    assert not policy.licenses.allows("llama3") and not policy.licenses.allows(None)
    text = explain(policy)
    assert "apache-2.0" in text and "'license' check" in text and "base model's license" in text


def test_promotion_outcome() -> None:
    d = decide(report(), quant(), drift(), POLICY, LINEAGE)
    assert promotion_outcome(d, "promoted", "old", "c").model_digest == "c"
    assert promotion_outcome(d, "kept", "c", "c").reasons == ("already in production",)
    dry = promotion_outcome(d, "kept", "old", "c", dry_run=True)
    assert dry.action == "dry_run" and dry.model_digest == "old" and "would promote" in dry.reasons[0]


# Calibration by simulation: 60 questions, per-question spread 0.3 (as ROUGE-L shows), 200 runs.
def test_calibration_false_promotions_and_power() -> None:
    policy = load_policy(ROOT / "policies" / "release.yaml").model_copy(update={"min_improvement": 0.0})
    null_rate = promotion_rate(policy, true_gain=0.0)
    power = promotion_rate(policy, true_gain=0.12)
    assert null_rate <= 0.05, f"promotes {null_rate:.1%} of challengers with no true gain"
    assert power >= 0.80, f"promotes only {power:.1%} of challengers 0.12 better"
    assert mean_rule_rate(0.05, 0.0) > null_rate * 2, "the old mean rule is the noisier one"
    bad_slice = promotion_rate(policy, true_gain=0.2, slice_gains={3: -0.2})
    assert bad_slice <= 0.2, f"a challenger 0.2 worse on a 15-question slice still promoted {bad_slice:.0%}"


def test_policy_file_is_valid_and_explained() -> None:
    policy = load_policy(ROOT / "policies" / "release.yaml")
    text = explain(policy)
    assert "paired-bootstrap" in text and policy.digest[7:19] in text and "question_type" in text


@pytest.mark.parametrize(
    ("content", "fields"),
    [
        ("confidence: .inf\nmin_improvement: .nan\n", ["confidence", "min_improvement"]),
        ("min_scores: {rouge_l: -.inf, bleu: 2}\n", ["min_scores"]),
        ("primary_metric: accuracy\nmode: best\n", ["primary_metric", "mode"]),
        ("min_questions: 030\nsurprise: 1\n", ["surprise"]),
        ("licenses: apache-2.0\n", ["licenses: Value error, must be a mapping"]),
        ("licenses: {allowed: apache-2.0}\n", ["licenses.allowed: Value error, must be a list"]),
        ("licenses: {allowed: [apache-2.0, 3]}\n", ["licenses.allowed.1"]),
        ("licenses: {allowed: []}\n", ["licenses.allowed: Value error, lists no license"]),
        ("licenses: {allowed: [mit, MIT, other, 'apache 2']}\n", ["licenses.allowed: Value error, not license ids"]),
        ("licenses: {allowed: [mit, MIT]}\n", ["licenses.allowed: Value error, listed twice: ['mit']"]),
        ("licenses: {allowed: [unknown]}\n", ["licenses.allowed: Value error, ['unknown'] name no license"]),
        ("licenses: {alowed: [mit]}\n", ["licenses.alowed"]),
    ],
)
def test_bad_policy_files_report_every_field(tmp_path: Path, content: str, fields: list[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for name in fields:
        assert name in message


def test_leading_zero_is_decimal_in_a_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("min_questions: 030\n")
    assert load_policy(path).min_questions == 30


def judged(r: EvalReport, metric: str, challenger: tuple[float, ...] | None = None) -> EvalReport:
    """``r`` with LLM-judged scores for ``metric``: its rouge_l scores, or ``challenger`` for the challenger."""
    from lockgate.records import MetricSummary, PairedScores

    scores = r.per_question["rouge_l"]
    paired = PairedScores(challenger=challenger or scores.challenger, champion=scores.champion)
    values = np.asarray(paired.challenger)
    mean = float(values.mean())
    summary = MetricSummary(mean=mean, ci_low=mean - 0.01, ci_high=mean + 0.01, n=values.size)
    challenger_scores = r.challenger.model_copy(update={"metrics": {**r.challenger.metrics, metric: summary}})
    return r.model_copy(update={"per_question": {**r.per_question, metric: paired}, "challenger": challenger_scores})


def test_judged_metrics_may_decide_and_floor_a_release() -> None:
    policy = GatePolicy(
        primary_metric="faithfulness", min_scores={"answer_relevancy": 0.3}, slices=SlicePolicy(field="type")
    )
    r = judged(judged(report(), "faithfulness"), "answer_relevancy")
    d = decide(r, quant(), drift(), policy, LINEAGE)
    assert d.passed, d.reasons
    assert "superiority:faithfulness" in {c.name for c in d.checks} and "faithfulness" in d.paired
    assert "judged by an LLM" in explain(policy) and "judge_base_url" in explain(policy)


def test_a_judged_metric_without_a_judge_fails_closed_naming_why() -> None:
    policy = GatePolicy(primary_metric="faithfulness", min_scores={"llm_context_precision": 0.1})
    d = decide(report(), quant(), drift(), policy, LINEAGE)  # no judge configured: no judged scores at all
    assert not d.passed
    assert {"superiority:faithfulness", "floor:llm_context_precision"} <= failed(d)
    reasons = " | ".join(d.reasons)
    assert "faithfulness missing: it is judged by an LLM and no judge scored" in reasons, reasons
    assert "llm_context_precision missing: it is judged by an LLM" in reasons, reasons


def test_a_judged_metric_the_judge_failed_on_fails_closed_naming_why() -> None:
    r = report()
    n = r.n_questions
    broken = judged(r, "faithfulness", (math.nan,) * n)  # every judge call timed out or answered garbage
    policy = GatePolicy(primary_metric="faithfulness", min_scores={"faithfulness": 0.1}, slices=None)
    d = decide(broken, quant(), drift(), policy, LINEAGE)
    assert not d.passed
    assert {"superiority:faithfulness", "floor:faithfulness", "judged:faithfulness"} <= failed(d)
    reasons = " | ".join(d.reasons)
    assert "not a number" in reasons and "the judge left scores missing" in reasons, reasons
    assert f"challenger {n}/{n}" in reasons, "the judged check counts the questions without a score"


def twin_report(same: int = 60) -> EvalReport:
    """Production's own answers from a retrained twin: every paired difference 0, ``same`` texts equal."""
    return report(gain=0.0, sd=0.0, base_score=0.5).model_copy(update={"same_answers": same})


def test_a_twin_answering_exactly_as_production_is_no_change_not_a_rejection() -> None:
    twin = twin_report()
    rejected = decide_release(
        evaluation=twin, quant=quant(), drift=drift(), base=base_model(), policy=POLICY, expected=LINEAGE
    )
    assert not rejected.passed and not rejected.unchanged, "against the base model of a first release: no gain"
    assert failed(rejected) == {"superiority:rouge_l"} and "no gain at all" in rejected.reasons[0]

    kept = decide_release(
        evaluation=twin,
        quant=quant(),
        drift=drift(),
        base=base_model(),
        policy=POLICY,
        expected=LINEAGE,
        champion_in_production=True,
    )
    assert not kept.passed and kept.unchanged and verdict_word(kept) == "NO CHANGE"
    assert (
        kept.reasons[0]
        == "no change: the candidate answers all 60 eval questions exactly as production b does; production kept"
    )
    assert kept.digest != rejected.digest
    assert promotion_outcome(kept, "kept", "b", "c").action == "kept"


@pytest.mark.parametrize(
    ("same", "spoiler"),
    [
        (59, None),  # one answer differs: judged as any candidate
        (60, "quant"),  # identical answers, but the quantization check failed
        (60, "license"),  # identical answers, but the base model's license is not allowed
        (60, "revoked"),  # identical answers, but this very model was rolled back
    ],
)
def test_no_change_needs_every_answer_the_same_and_nothing_else_wrong(same: int, spoiler: str | None) -> None:
    decision = decide_release(
        evaluation=twin_report(same),
        quant=quant(passed=spoiler != "quant"),
        drift=drift(),
        base=base_model(license="proprietary" if spoiler == "license" else "apache-2.0"),
        policy=POLICY,
        expected=LINEAGE,
        revoked="rolled back by ana" if spoiler == "revoked" else None,
        champion_in_production=True,
    )
    assert not decision.passed and not decision.unchanged and verdict_word(decision) == "REJECTED"
    assert not any(r.startswith("no change") for r in decision.reasons)

"""How often would a policy promote? Calibration of the gate by simulation.

Per-question score differences are drawn around a true gain with a given spread, the gate
decides on them exactly as on a real evaluation, and the share of promotions is counted:
with no true gain it is the false-promotion rate, with a real one the power.
"""

from __future__ import annotations

import numpy as np

from lockgate.gates import decide
from lockgate.metrics import ANSWER_METRICS
from lockgate.policy import GatePolicy
from lockgate.records import EvalReport, MetricSummary, ModelScores, PairedScores, ReleaseLineage

_LINEAGE = ReleaseLineage(
    candidate="sim:challenger", champion="sim:champion", dataset="sim:data", index="sim:index", prompt_version="sim"
)


def simulated_report(
    diffs: np.ndarray, champion: np.ndarray, labels: list[str], slice_field: str = "question_type"
) -> EvalReport:
    """An evaluation whose per-question primary scores are ``champion`` and ``champion + diffs``."""
    challenger = champion + diffs

    def scores(values: np.ndarray, model: str) -> ModelScores:
        mean = float(values.mean())
        summary = MetricSummary(mean=mean, ci_low=mean, ci_high=mean, n=len(values))
        return ModelScores(model_id=model, label=model, metrics=dict.fromkeys(ANSWER_METRICS, summary))

    paired = PairedScores(challenger=tuple(challenger.tolist()), champion=tuple(champion.tolist()))
    return EvalReport(
        digest="sim:report",
        prompt_version="sim",
        dataset_digest="sim:data",
        index_digest="sim:index",
        challenger=scores(challenger, "sim:challenger"),
        champion=scores(champion, "sim:champion"),
        retrieval={},
        per_question=dict.fromkeys(ANSWER_METRICS, paired),
        slice_labels={slice_field: tuple(labels)},
        rows_path="",
        n_questions=len(diffs),
    )


def promotion_rate(
    policy: GatePolicy,
    true_gain: float,
    sd: float = 0.3,
    n_questions: int = 60,
    runs: int = 200,
    seed: int = 0,
    n_slices: int = 4,
    slice_gains: dict[int, float] | None = None,
) -> float:
    """Share of simulated evaluations the policy promotes.

    Args:
        true_gain: the challenger's true mean gain per question.
        sd: spread of the per-question differences (about 0.3 for ROUGE-L).
        n_slices: questions are split evenly into this many slices.
        slice_gains: a different true gain for some slices (slice index -> gain), e.g. one bad slice.
    """
    rng = np.random.default_rng(seed)
    labels = [f"s{i * n_slices // n_questions}" for i in range(n_questions)]
    means = np.array([(slice_gains or {}).get(int(label[1:]), true_gain) for label in labels])
    sim_policy = policy.model_copy(update={"require_quant_check": False, "block_on_drift": False, "min_scores": {}})
    field = policy.slices.field if policy.slices is not None else "question_type"
    passed = 0
    for _ in range(runs):
        champion = rng.uniform(0.2, 0.8, n_questions)
        diffs = rng.normal(means, sd)
        report = simulated_report(diffs, champion, labels, field)
        passed += decide(report, None, None, sim_policy, _LINEAGE).passed
    return passed / runs


def mean_rule_rate(
    margin: float, true_gain: float, sd: float = 0.3, n_questions: int = 60, runs: int = 200, seed: int = 0
) -> float:
    """The old rule for comparison: promote when the mean gain is at least ``margin``."""
    rng = np.random.default_rng(seed)
    return float(np.mean([rng.normal(true_gain, sd, n_questions).mean() >= margin for _ in range(runs)]))

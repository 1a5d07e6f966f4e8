"""An evaluation whose LLM judge failed is never served from the stage cache: the next run asks again."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from prefect import task

from lockgate.judge import judge_complete
from lockgate.records import EvalReport, PairedScores
from tasks.common import StageCache, StageLog
from tests.lockgate.test_gates import report


def judged_report(folder: str) -> EvalReport:
    """A report whose faithfulness the judge scored, or failed to score while ``folder/judge-down`` exists."""
    counter = Path(folder) / "calls"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    base = report()
    n = base.n_questions
    score = math.nan if (Path(folder) / "judge-down").exists() else 0.9
    faithfulness = PairedScores(challenger=(score,) * n, champion=(0.8,) * n)
    return base.model_copy(update={"per_question": {**base.per_question, "faithfulness": faithfulness}})


@task(
    cache_policy=StageCache(stage="judged-test", ignore=("folder",), reusable=judge_complete),
    persist_result=True,
    result_serializer="json",
)
def judged_stage(folder: str, key: str) -> EvalReport:
    return judged_report(folder)


def test_a_report_with_missing_judged_scores_is_not_reused(prefect_harness: None, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    (tmp_path / "judge-down").touch()
    key = uuid.uuid4().hex  # a cache key of its own: no earlier session's entry
    stages = StageLog()
    failed = stages.run_cached("evaluate", judged_stage, str(tmp_path), key)
    assert not judge_complete(failed) and calls.read_text() == "1"

    (tmp_path / "judge-down").unlink()  # the judge answers again: the same inputs, the same cache key
    judged = stages.run_cached("evaluate", judged_stage, str(tmp_path), key)
    assert calls.read_text() == "2", "the failed evaluation was run again, not read from the cache"
    assert judge_complete(judged) and stages.cached == []

    again = stages.run_cached("evaluate", judged_stage, str(tmp_path), key)
    assert again == judged and calls.read_text() == "2" and stages.cached == ["evaluate"], "a complete one is reused"


def test_judge_complete_looks_at_judged_metrics_only() -> None:
    base = report()
    n = base.n_questions
    assert judge_complete(base), "no judge configured: nothing judged is missing"
    holes = PairedScores(challenger=(0.5,) * n, champion=(0.5,) * (n - 1) + (math.nan,))
    assert not judge_complete(
        base.model_copy(update={"per_question": {**base.per_question, "answer_relevancy": holes}})
    )
    assert judge_complete("not a report")

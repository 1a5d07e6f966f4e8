"""LLM-judged metrics against a real OpenAI-compatible HTTP server on 127.0.0.1 (a scripted judge):
a working judge scores, a slow one and a garbage one leave scores missing with the reason, and the
gate fails closed on a missing judged score. The key is sent to the judge and shown nowhere else."""

from __future__ import annotations

import json
import logging
import math

import pytest
from pydantic import SecretStr

from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.gates import decide
from lockgate.judge import JudgeConfig, judge_config, judged_checks, judged_scores
from lockgate.metrics import JUDGED_METRICS
from lockgate.records import PairedScores
from lockgate.settings import EvaluationSettings
from tests.lockgate.judge_server import judge_server
from tests.lockgate.test_gates import LINEAGE, POLICY, drift, quant, report

KEY = "sk-judge-test-0123456789abcdef"
EMBEDDER = SentenceTransformerEmbedder()  # loads on its first encode
QUESTIONS = ["Which port does the Sorter listen on?", "Who maintains the Relay?"]
ANSWERS = ["The Sorter listens on port 7000.", "The Fleet team maintains the Relay."]
CONTEXTS = [["The Sorter listens on port 7000 for jobs."], ["The Relay is maintained by the Fleet team."]]
REFERENCES = ["port 7000", "the Fleet team"]


def score(server_url: str, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    config = JudgeConfig(base_url=server_url, model="judge", api_key=SecretStr(KEY), timeout_s=timeout_s)
    return judged_scores(config, QUESTIONS, ANSWERS, CONTEXTS, REFERENCES, EMBEDDER)


def test_a_working_judge_scores_every_question_and_its_calls_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), judge_server("ok") as server:
        scores, report_ = score(server.base_url)
    assert set(scores) == set(JUDGED_METRICS)
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in scores.values()), scores
    assert scores["faithfulness"] == [1.0, 1.0], "every statement the judge saw was supported"
    assert report_.calls == server.requests >= 6 and report_.missing == dict.fromkeys(JUDGED_METRICS, 0)
    assert report_.latency_ms_p95 >= report_.latency_ms_p50 > 0
    assert server.authorization == {f"Bearer {KEY}"}, "the key reaches the judge"
    assert KEY not in caplog.text and KEY not in report_.model_dump_json(), "and nowhere else"


def test_a_judge_that_times_out_leaves_scores_missing_with_the_reason() -> None:
    with judge_server("slow", delay_s=3.0) as server:
        scores, report_ = score(server.base_url, timeout_s=0.5)
    assert all(math.isnan(x) for v in scores.values() for x in v)
    assert set(report_.reasons) == {"timeout"} and report_.missing == dict.fromkeys(JUDGED_METRICS, 2)
    assert report_.calls >= 1 and report_.latency_ms_p50 >= 400


def test_the_judge_is_asked_several_questions_at_once_but_never_more_than_the_setting() -> None:
    """One call at a time left a judge endpoint idle between calls (a slow judge cost N x its latency)."""
    with judge_server("slow", delay_s=0.3) as server:
        config = JudgeConfig(
            base_url=server.base_url, model="judge", api_key=SecretStr(KEY), timeout_s=20.0, concurrency=3
        )
        scores, report_ = judged_scores(config, QUESTIONS * 3, ANSWERS * 3, CONTEXTS * 3, REFERENCES * 3, EMBEDDER)
    assert all(len(v) == 6 and all(math.isfinite(x) for x in v) for v in scores.values()), scores
    assert 2 <= server.most_in_flight <= 3, server.most_in_flight
    assert report_.calls == server.requests


def test_a_judge_that_answers_garbage_leaves_scores_missing_with_the_reason() -> None:
    with judge_server("garbage") as server:
        scores, report_ = score(server.base_url)
    assert all(math.isnan(x) for v in scores.values() for x in v)
    assert set(report_.reasons) == {"unparseable"}, report_.examples


def test_the_gate_fails_closed_on_a_missing_judged_score() -> None:
    base = report()
    n = len(base.per_question["rouge_l"].challenger)
    judged = {m: PairedScores(challenger=(0.9,) * n, champion=(0.8,) * n) for m in JUDGED_METRICS}
    complete = base.model_copy(update={"per_question": {**base.per_question, **judged}})
    assert decide(complete, quant(), drift(), POLICY, LINEAGE).passed
    assert all(c.passed for c in judged_checks(complete)) and len(judged_checks(complete)) == 3
    holes = dict(judged)
    holes["faithfulness"] = PairedScores(challenger=(0.9,) * (n - 1) + (math.nan,), champion=(0.8,) * n)
    missing = base.model_copy(update={"per_question": {**base.per_question, **holes}})
    decision = decide(missing, quant(), drift(), POLICY, LINEAGE)
    assert not decision.passed
    (failed,) = [c for c in decision.checks if not c.passed]
    assert failed.name == "judged:faithfulness" and f"challenger 1/{n}" in failed.detail
    assert judged_checks(base) == [], "no judge configured: nothing judged, nothing to check"


def test_the_judge_is_off_by_default_and_its_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert judge_config(EvaluationSettings()) is None
    monkeypatch.setenv("LOCKGATE_JUDGE_API_KEY", KEY)
    config = judge_config(EvaluationSettings(judge_base_url="http://127.0.0.1:9/v1", judge_model="m"))
    assert config is not None and config.api_key is not None and config.api_key.get_secret_value() == KEY
    assert KEY not in repr(config) and KEY not in str(config)
    dumped = json.dumps(EvaluationSettings(judge_base_url="http://127.0.0.1:9/v1").model_dump())
    assert KEY not in dumped, "the key is never a setting"


def test_the_gate_names_why_the_judge_left_scores_missing() -> None:
    base = report()
    n = len(base.per_question["rouge_l"].challenger)
    down = PairedScores(challenger=(math.nan,) * n, champion=(math.nan,) * n)
    judged = {m: down for m in JUDGED_METRICS}
    timed_out = base.model_copy(
        update={"per_question": {**base.per_question, **judged}, "judge_failures": {"timeout": 3 * 2 * n}}
    )
    (check, *_) = judged_checks(timed_out)
    assert not check.passed and f"the judge timed out ({6 * n} scores)" in check.detail, check.detail
    garbage = timed_out.model_copy(update={"judge_failures": {"unparseable": 1, "timeout": 2}})
    detail = judged_checks(garbage)[0].detail
    assert "timed out (2 scores), answered unparseably (1 score)" in detail, detail

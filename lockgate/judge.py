"""LLM-judged Ragas metrics through any OpenAI-compatible endpoint (vLLM, a hosted API).

Used only when ``evaluation.judge_base_url`` is set; the default stays offline with metrics
that need no LLM. The key comes from the environment variable ``evaluation.judge_api_key_env``
as a ``SecretStr`` and is never logged, stored or put in a report.

A judge that times out, fails or answers something that does not parse scores that question
``NaN`` for that metric: a missing score, never a guess, so the gate (which refuses any
judged metric that is not a number) fails closed. Every call is counted and timed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, SecretStr

from lockgate.embeddings import Embedder
from lockgate.errors import ConfigError
from lockgate.metrics import JUDGED_METRICS
from lockgate.records import EvalReport, GateCheck, PairedScores
from lockgate.settings import EvaluationSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is and how long one question may take; the key stays a secret."""

    base_url: str
    model: str
    api_key: SecretStr | None
    timeout_s: float
    concurrency: int = 8

    def __repr__(self) -> str:  # the key is a SecretStr already; say so plainly
        return f"JudgeConfig(base_url={self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s})"


def judge_config(settings: EvaluationSettings) -> JudgeConfig | None:
    """The judge the settings ask for (its key read from the environment now), or None: offline metrics only."""
    if settings.judge_base_url is None:
        return None
    key = os.environ.get(settings.judge_api_key_env)
    return JudgeConfig(
        base_url=settings.judge_base_url,
        model=settings.judge_model,
        api_key=SecretStr(key) if key else None,
        timeout_s=settings.judge_timeout_s,
        concurrency=settings.judge_concurrency,
    )


class JudgeReport(BaseModel):
    """How the judge did: calls, their latency, and why scores are missing."""

    model_config = ConfigDict(frozen=True)

    calls: int
    latency_ms_p50: float
    latency_ms_p95: float
    missing: dict[str, int]  # metric -> questions without a score
    reasons: dict[str, int]  # timeout / error / unparseable -> count
    examples: list[str]  # the first few failures, one line each


@dataclass
class _CallLog:
    seconds: list[float] = field(default_factory=list)


class _TimedTransport:
    """An httpx transport that times every request the judge client sends."""

    def __init__(self, inner: Any, calls: _CallLog) -> None:
        self.inner = inner
        self.calls = calls

    async def handle_async_request(self, request: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.calls.seconds.append(time.perf_counter() - start)

    async def aclose(self) -> None:
        await self.inner.aclose()


def failure_kind(exc: BaseException) -> str:
    """``timeout``, ``unparseable`` or ``error``: why a judged score is missing."""
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {"TimeoutError", "APITimeoutError", "ReadTimeout", "TimeoutException"}:
        return "timeout"
    if names & {"ValidationError", "JSONDecodeError", "InstructorRetryException", "IncompleteOutputException"}:
        return "unparseable"
    return "error"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def judged_scores(
    config: JudgeConfig,
    questions: Sequence[str],
    answers: Sequence[str],
    contexts: Sequence[Sequence[str]],
    references: Sequence[str],
    embedder: Embedder,
    metrics: Sequence[str] = JUDGED_METRICS,
) -> tuple[dict[str, list[float]], JudgeReport]:
    """Faithfulness, answer relevancy and LLM context precision per question (or only ``metrics``
    of them); NaN where the judge failed.

    Raises:
        ConfigError: the judge cannot be set up (a missing package); a judge that answers badly never raises.
    """
    unknown = sorted(set(metrics) - set(JUDGED_METRICS))
    if unknown:
        raise ValueError(f"not judged metrics: {unknown}")
    return asyncio.run(_judged_scores(config, questions, answers, contexts, references, embedder, metrics))


async def _judged_scores(
    config: JudgeConfig,
    questions: Sequence[str],
    answers: Sequence[str],
    contexts: Sequence[Sequence[str]],
    references: Sequence[str],
    embedder: Embedder,
    wanted: Sequence[str],
) -> tuple[dict[str, list[float]], JudgeReport]:
    try:
        import httpx
        from openai import AsyncOpenAI
        from ragas.llms import llm_factory
        from ragas.metrics.collections import AnswerRelevancy, ContextPrecision, Faithfulness

        from lockgate.ragas_embeddings import PrimedEmbeddings
    except ImportError as exc:
        raise ConfigError(f"evaluation.judge_base_url: the judge needs {exc.name}") from None

    calls = _CallLog()
    transport = _TimedTransport(httpx.AsyncHTTPTransport(), calls)
    http = httpx.AsyncClient(transport=transport, timeout=config.timeout_s)  # type: ignore[arg-type]
    client = AsyncOpenAI(
        base_url=config.base_url,
        api_key=config.api_key.get_secret_value() if config.api_key else "no-key",
        timeout=config.timeout_s,
        max_retries=0,  # a retry would hide a slow judge; the question scores NaN instead
        http_client=http,
    )
    llm = llm_factory(config.model, provider="openai", client=client)
    metrics: dict[str, Any] = {}
    if "faithfulness" in wanted:
        metrics["faithfulness"] = Faithfulness(llm=llm)
    if "answer_relevancy" in wanted:  # the only one that needs the embedder
        embeddings = PrimedEmbeddings(embedder)  # the stage's own embedder, not a second copy
        metrics["answer_relevancy"] = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=1)
        await embeddings.aembed_text("warm-up")  # loading the embedder must not eat a judge call's time
    if "llm_context_precision" in wanted:
        metrics["llm_context_precision"] = ContextPrecision(llm=llm)
    scores: dict[str, list[float]] = {name: [] for name in JUDGED_METRICS if name in wanted}
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    in_flight = asyncio.Semaphore(config.concurrency)

    async def judged(name: str, inputs: dict[str, Any]) -> tuple[float, tuple[str, str] | None]:
        """One judged score, or NaN and why it is missing (its kind, and a line saying what happened)."""
        async with in_flight:
            try:
                # A whole metric (several calls) gets a bounded time too: a judge that trickles never hangs us.
                result = await asyncio.wait_for(metrics[name].ascore(**inputs), 3 * config.timeout_s)
                value = float(result.value)
            except Exception as exc:  # any judge failure is a missing score, with its kind
                kind = failure_kind(exc)
                return float("nan"), (kind, f"{name}: {kind}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        return (value if np.isfinite(value) else float("nan")), None

    asked: list[tuple[str, dict[str, Any]]] = []
    for q, a, ctx, ref in zip(questions, answers, contexts, references, strict=True):
        inputs: dict[str, dict[str, Any]] = {
            "faithfulness": {"user_input": q, "response": a or " ", "retrieved_contexts": list(ctx)},
            "answer_relevancy": {"user_input": q, "response": a or " "},
            "llm_context_precision": {"user_input": q, "reference": ref, "retrieved_contexts": list(ctx)},
        }
        asked += [(name, inputs[name]) for name in JUDGED_METRICS if name in wanted]
    try:
        # In question order, whatever order the answers arrive in.
        for (name, _), (value, failure) in zip(
            asked, await asyncio.gather(*(judged(name, inputs) for name, inputs in asked)), strict=True
        ):
            scores[name].append(value)
            if failure is not None:
                kind, example = failure
                reasons[kind] += 1
                if len(examples) < 5:
                    examples.append(example)
    finally:
        await client.close()
    seconds = np.asarray(calls.seconds or [0.0]) * 1000.0
    report = JudgeReport(
        calls=len(calls.seconds),
        latency_ms_p50=float(np.quantile(seconds, 0.5)),
        latency_ms_p95=float(np.quantile(seconds, 0.95)),
        missing={name: int(sum(not np.isfinite(v) for v in values)) for name, values in scores.items()},
        reasons=dict(reasons),
        examples=examples,
    )
    log.info(
        "judge %s: %d calls, p50 %.0f ms, p95 %.0f ms, missing %s",
        config.model,
        report.calls,
        report.latency_ms_p50,
        report.latency_ms_p95,
        report.missing,
    )
    return scores, report


def judge_complete(evaluation: Any) -> bool:
    """Whether an evaluation may be reused: no LLM-judged score of it is missing.

    A judge that timed out or answered garbage may answer next time, so such a report is never
    served from a cache; anything other than an ``EvalReport`` is not this function's business.
    """
    if not isinstance(evaluation, EvalReport):
        return True
    return not any(
        any(_missing_scores(scores).values())
        for name, scores in evaluation.per_question.items()
        if name in JUDGED_METRICS
    )


def _missing_scores(scores: PairedScores) -> dict[str, int]:
    """How many questions lack a judged score, per side (a failed judge call scores NaN)."""
    return {
        side: sum(not np.isfinite(v) for v in values)
        for side, values in (("challenger", scores.challenger), ("champion", scores.champion))
    }


def judged_checks(evaluation: EvalReport) -> list[GateCheck]:
    """Gate checks of the judged metrics an evaluation carries: each must be a number for both sides.

    A judged metric with a missing score (the judge timed out, failed or answered unparseably)
    fails, naming how many questions lack it; the judge's report beside the eval rows says why.
    """
    checks = []
    for name in JUDGED_METRICS:
        scores = evaluation.per_question.get(name)
        if scores is None:
            continue  # no judge configured: nothing judged, nothing to check
        missing = _missing_scores(scores)
        ok = not any(missing.values()) and len(scores.challenger) > 0
        where = ", ".join(f"{side} {n}/{len(scores.challenger)}" for side, n in missing.items() if n)
        why = _failures(evaluation.judge_failures)
        checks.append(
            GateCheck(
                name=f"judged:{name}",
                passed=ok,
                detail=f"{name} judged for every question"
                if ok
                else f"{name} missing for {where or 'every'} question(s): {why} (see judge.json beside the eval "
                "rows); a missing score never passes",
            )
        )
    return checks


_FAILURE_WORDS = {"timeout": "timed out", "unparseable": "answered unparseably", "error": "failed"}


def _failures(counts: dict[str, int]) -> str:
    """``the judge timed out (12 scores), answered unparseably (3 scores)``: why judged scores are missing."""
    if not counts:
        return "the judge timed out, failed or answered unparseably"
    kinds = [
        f"{_FAILURE_WORDS.get(kind, kind)} ({n} score{'s' if n != 1 else ''})" for kind, n in sorted(counts.items())
    ]
    return "the judge " + ", ".join(kinds)

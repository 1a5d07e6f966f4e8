"""Evaluate challenger against champion: retrieve, answer, score with Ragas.

Both models answer the same eval questions with the same retrieved context, and with the same
prompt (a model release) or each with its own (a prompt-only release: one model, two prompts); the
answers are scored with Ragas metrics that need no LLM judge. Every per-row score is kept,
and each metric is summarised as a mean with a bootstrap confidence interval, overall and
per question type.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lockgate._io import write_jsonl
from lockgate.answering import Answerer, TransformersAnswerer
from lockgate.artifacts import ArtifactStore
from lockgate.chat import chat_format_of, prompt_for_model
from lockgate.digest import digest_json, digest_tree, short
from lockgate.embeddings import Embedder
from lockgate.errors import StageError
from lockgate.judge import JudgeConfig
from lockgate.metrics import ANSWER_METRICS, JUDGED_METRICS, RETRIEVAL_METRICS
from lockgate.prompts import EVAL_VARIABLES, PromptSpec
from lockgate.quantize import merged_beside
from lockgate.records import BaseModelArtifact, EvalReport, MetricSummary, ModelScores, PairedScores
from lockgate.registry import ModelVersion
from lockgate.settings import EvaluationSettings
from lockgate.stats import PairedDifference, paired_difference
from lockgate.stores import VectorStore
from lockgate.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelUnderTest:
    """A model variant to answer with: a label for people, a digest for lineage, a path to load."""

    label: str
    digest: str
    path: str
    registered: bool = False  # a registry version (production), not the bare base model


@dataclass(frozen=True)
class EvalJob:
    """What one evaluation compares, on which data, index and prompt."""

    challenger: ModelUnderTest
    champion: ModelUnderTest
    eval_rows: list[dict[str, str]]
    dataset_digest: str
    index_digest: str
    prompt: PromptSpec
    champion_prompt: PromptSpec | None = None  # a prompt-only release: the production prompt; else the same

    @property
    def prompts(self) -> tuple[PromptSpec, PromptSpec]:
        """The prompt the challenger answers with, and the champion's."""
        return self.prompt, self.champion_prompt or self.prompt


@dataclass(frozen=True)
class Retrieval:
    """The engines evaluation retrieves context with; the embedder also embeds for the metrics that do."""

    store: VectorStore
    embedder: Embedder


@dataclass(frozen=True)
class Retrieved:
    question: str
    reference: str
    reference_context: str
    contexts: list[str]
    labels: dict[str, str]

    @property
    def question_type(self) -> str:
        return self.labels.get("question_type") or question_type(self.question)


def question_type(question: str) -> str:
    """A coarse slice key: the question's first word (what/which/how/...)."""
    first = question.strip().split(" ", 1)[0].lower().strip("?,.")
    return first or "other"


def slice_labels(row: dict[str, str], fields: list[str]) -> dict[str, str]:
    """The slice each question belongs to, per field ('question_type' is derived, others are row fields)."""
    labels = {}
    for name in fields:
        value = question_type(row["instruction"]) if name == "question_type" else row.get(name)
        labels[name] = str(value) if value not in (None, "") else "(none)"
    return labels


def choose_champion(production: ModelVersion | None, base: BaseModelArtifact) -> ModelUnderTest:
    """The model to beat: production (or what it replaced, if the candidate is production), else the base."""
    if production is not None:
        return ModelUnderTest(
            label="champion (production)", digest=production.digest, path=production.path, registered=True
        )
    return ModelUnderTest(label="champion (base model)", digest=base.digest, path=base.path)


def prompt_contenders(
    production: ModelVersion, candidate: PromptSpec, current: PromptSpec
) -> tuple[ModelUnderTest, ModelUnderTest]:
    """A prompt-only release: production's model answers as challenger with the candidate prompt and as
    champion with the production prompt; the labels name the prompt (the gate checks the champion's)."""
    digest, path = production.digest, production.path
    return (
        ModelUnderTest(label=f"candidate prompt {candidate.version}", digest=digest, path=path, registered=True),
        ModelUnderTest(label=f"production prompt {current.version}", digest=digest, path=path, registered=True),
    )


def merged_twin(model: ModelUnderTest) -> ModelUnderTest | None:
    """The un-quantized (merged) checkpoint a quantized model was made from, where the quantize stage kept
    it beside the model (``QuantizedModel.merged_path``); None for any other model or if it is gone."""
    merged = merged_beside(Path(model.path))
    if merged is None:
        return None
    return ModelUnderTest(label=f"{model.label} merged (un-quantized)", digest=digest_tree(merged), path=str(merged))


def retrieve(
    rows: list[dict[str, str]], store: VectorStore, embedder: Embedder, top_k: int, fields: list[str] | None = None
) -> list[Retrieved]:
    """Top-k chunks from the index for every eval question."""
    hits = store.search(embedder.encode([r["instruction"] for r in rows]), top_k)
    if len(hits) != len(rows) or any(not h for h in hits):
        raise StageError("the index returned no results for some questions; is it empty? run the refresh stage")
    return [
        Retrieved(
            r["instruction"],
            r["output"],
            r.get("context", ""),
            [h.text for h in hs],
            slice_labels(r, fields or ["question_type"]),
        )
        for r, hs in zip(rows, hits, strict=True)
    ]


def generate_answers(
    model_path: str,
    items: list[Retrieved],
    max_new_tokens: int,
    prompt: PromptSpec,
    progress: Callable[[int, int], None] | None = None,
    answerer: Answerer | None = None,
) -> list[str]:
    """Greedy answers of one model to every question, given its retrieved context, in the text the
    gateway will send (the prompt inside the model's own chat template).

    Raises:
        ConfigError: the prompt needs a variable evaluation does not supply (before any model loads).
    """
    prompt.require(EVAL_VARIABLES)
    chat = chat_format_of(model_path)
    texts = [prompt_for_model(chat, prompt, item.question, item.contexts) for item in items]
    return (answerer or TransformersAnswerer()).answer(model_path, texts, max_new_tokens, progress)


def answers_for(
    model: ModelUnderTest,
    prompt: PromptSpec,
    items: list[Retrieved],
    max_new_tokens: int,
    artifacts: ArtifactStore,
    progress: Callable[[int, int], None] | None = None,
    answerer: Answerer | None = None,
) -> list[str]:
    """``generate_answers``, kept by content: greedy decoding is deterministic, so another evaluation of
    the same model, prompt and questions (a prompt release after a model release, the matrix) reuses them.

    The key names the model and prompt by digest, every question with its context, the library
    source that generates and the installed packages.
    """
    from lockgate.fingerprint import app_environment_digest, source_digest

    answerer = answerer or TransformersAnswerer()
    digest = digest_json(
        {
            "engine": answerer.name,
            "model": model.digest,
            "prompt": prompt.digest,
            "max_new_tokens": max_new_tokens,
            "inputs": [[i.question, i.contexts] for i in items],
            "source": source_digest("lockgate.evaluate"),
            "environment": app_environment_digest(),
        }
    )
    stored = artifacts.path_of("answers", digest) / "answers.json"
    if stored.is_file():
        answers = json.loads(stored.read_text(encoding="utf-8"))
        if isinstance(answers, list) and len(answers) == len(items):
            log.info("answers of %s with %s: reused (%s)", model.label, prompt.version, short(digest))
            return [str(a) for a in answers]
    answers = generate_answers(model.path, items, max_new_tokens, prompt, progress, answerer)
    staged = artifacts.staging("answers")
    (staged / "answers.json").write_text(json.dumps(answers), encoding="utf-8")
    artifacts.commit("answers", staged, digest)
    return answers


def ragas_metrics(embedder: Embedder) -> dict[str, Any]:
    """The Ragas metrics Lockgate scores with; semantic similarity embeds with ``embedder`` (the
    stage's own, primed with each scoring run's texts by ``ragas_scores``)."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import (
            BleuScore,
            ChrfScore,
            NonLLMContextPrecisionWithReference,
            NonLLMContextRecall,
            NonLLMStringSimilarity,
            RougeScore,
            SemanticSimilarity,
        )

        from lockgate.ragas_embeddings import PrimedEmbeddings
    emb = PrimedEmbeddings(embedder)
    return {
        "rouge_l": RougeScore(rouge_type="rougeL"),
        "string_similarity": NonLLMStringSimilarity(),
        "bleu": BleuScore(),
        "chrf": ChrfScore(),
        "semantic_similarity": SemanticSimilarity(embeddings=emb),
        "context_recall": NonLLMContextRecall(),
        "context_precision": NonLLMContextPrecisionWithReference(),
    }


def ragas_scores(
    items: list[Retrieved], answers: list[str], metrics: dict[str, Any], names: tuple[str, ...]
) -> dict[str, list[float]]:
    """Per-row Ragas scores for the named metrics."""
    from ragas import EvaluationDataset, SingleTurnSample, evaluate
    from ragas.dataset_schema import EvaluationResult

    samples: list[Any] = [
        SingleTurnSample(
            user_input=i.question,
            response=a or " ",
            reference=i.reference,
            retrieved_contexts=i.contexts,
            reference_contexts=[i.reference_context or i.reference],
        )
        for i, a in zip(items, answers, strict=True)
    ]
    chosen = [metrics[n] for n in names]
    for metric in chosen:  # one batch for every text an embedding metric reads (PrimedEmbeddings)
        prime = getattr(getattr(metric, "embeddings", None), "prime", None)
        if prime is not None:
            prime([text for s in samples for text in (s.reference or " ", s.response or " ")])
    result = evaluate(EvaluationDataset(samples=samples), metrics=chosen, show_progress=False, raise_exceptions=True)
    if not isinstance(result, EvaluationResult):
        raise StageError(f"Ragas returned {type(result).__name__}, expected an EvaluationResult")
    frame = result.to_pandas()
    out = {}
    for name, metric in zip(names, chosen, strict=True):
        # Some metrics add their mode to the column name: "rouge_score(mode=fmeasure)".
        column = next((c for c in frame.columns if c == metric.name or str(c).startswith(metric.name + "(")), None)
        if column is None:
            raise StageError(f"Ragas returned no column for metric {metric.name!r}; got {list(frame.columns)}")
        out[name] = [float(v) for v in frame[column].tolist()]
    return out


def summarize(values: list[float], samples: int, seed: int) -> MetricSummary:
    """Mean and 95% bootstrap interval. Any NaN makes the whole summary NaN: NaN never passes."""
    return MetricSummary.of(values, 0.95, samples, seed)


def score_model(
    model: ModelUnderTest,
    items: list[Retrieved],
    answers: list[str],
    metrics: dict[str, Any],
    settings: EvaluationSettings,
) -> tuple[ModelScores, dict[str, list[float]]]:
    """Summaries of one model's answers, overall and per question type."""
    per_row = ragas_scores(items, answers, metrics, ANSWER_METRICS)
    overall = {m: summarize(v, settings.bootstrap_samples, settings.seed) for m, v in per_row.items()}
    slices: dict[str, dict[str, MetricSummary]] = {}
    for kind in sorted({i.question_type for i in items}):
        idx = [k for k, i in enumerate(items) if i.question_type == kind]
        slices[kind] = {
            m: summarize([v[k] for k in idx], settings.bootstrap_samples, settings.seed) for m, v in per_row.items()
        }
    return ModelScores(model_id=model.digest, label=model.label, metrics=overall, slices=slices), per_row


def same_answers(challenger: list[str], champion: list[str]) -> int:
    """How many questions both models answered with the same text (surrounding whitespace aside)."""
    return sum(a.strip() == b.strip() for a, b in zip(challenger, champion, strict=True))


def evaluate_models(
    job: EvalJob,
    retrieval: Retrieval,
    settings: EvaluationSettings,
    artifacts: ArtifactStore,
    progress: Callable[[str, int, int], None] | None = None,
    judge: JudgeConfig | None = None,
    answerer: Answerer | None = None,
) -> EvalReport:
    """Answer the eval set with both models and score them on identical inputs.

    With a ``judge``, both models' answers are also scored by the LLM-judged metrics (a failed
    judge call is NaN: missing, never guessed); the judge's report lands beside the rows as
    ``judge.json`` (calls, latency, what is missing and why).
    """
    if not job.eval_rows:
        raise StageError("the eval split is empty")
    for prompt in job.prompts:  # a prompt that cannot render fails here, before retrieval and models
        prompt.require(EVAL_VARIABLES)
    challenger, champion = job.challenger, job.champion
    prompts = {challenger.label: job.prompts[0], champion.label: job.prompts[1]}
    items = retrieve(job.eval_rows, retrieval.store, retrieval.embedder, settings.top_k, settings.slice_fields)
    metrics = ragas_metrics(retrieval.embedder)
    answers = {}
    for model in (challenger, champion):
        cb = (lambda done, total, label=model.label: progress(label, done, total)) if progress else None
        answers[model.label] = answers_for(
            model, prompts[model.label], items, settings.max_new_tokens, artifacts, cb, answerer
        )
    chall_scores, chall_rows = score_model(challenger, items, answers[challenger.label], metrics, settings)
    champ_scores, champ_rows = score_model(champion, items, answers[champion.label], metrics, settings)
    retrieval_rows = ragas_scores(items, answers[challenger.label], metrics, RETRIEVAL_METRICS)
    paired_metrics: tuple[str, ...] = ANSWER_METRICS
    judge_reports: dict[str, Any] = {}
    if judge is not None:
        from lockgate.judge import judged_scores

        for model, scores, per_row in ((challenger, chall_scores, chall_rows), (champion, champ_scores, champ_rows)):
            judged, judge_reports[model.label] = judged_scores(
                judge,
                [i.question for i in items],
                answers[model.label],
                [i.contexts for i in items],
                [i.reference for i in items],
                retrieval.embedder,
            )
            per_row.update(judged)
            summaries = {m: summarize(v, settings.bootstrap_samples, settings.seed) for m, v in judged.items()}
            if model is challenger:
                chall_scores = scores.model_copy(update={"metrics": {**scores.metrics, **summaries}})
            else:
                champ_scores = scores.model_copy(update={"metrics": {**scores.metrics, **summaries}})
        paired_metrics = ANSWER_METRICS + JUDGED_METRICS
    retrieval_summary = {m: summarize(v, settings.bootstrap_samples, settings.seed) for m, v in retrieval_rows.items()}

    rows = []
    for k, item in enumerate(items):
        rows.append(
            {
                "question": item.question,
                "type": item.question_type,
                **{f"slice_{name}": label for name, label in item.labels.items()},
                "reference": item.reference,
                "context": item.contexts,
                "challenger": answers[challenger.label][k],
                "champion": answers[champion.label][k],
                **{f"challenger_{m}": chall_rows[m][k] for m in paired_metrics},
                **{f"champion_{m}": champ_rows[m][k] for m in paired_metrics},
                **{m: retrieval_rows[m][k] for m in RETRIEVAL_METRICS},
            }
        )
    identity: dict[str, Any] = {
        "challenger": challenger.digest,
        "champion": champion.digest,
        "data": job.dataset_digest,
        "index": job.index_digest,
        "prompt": job.prompts[0].version,
        "champion_prompt": job.prompts[1].version,
        "settings": settings.model_dump(),
        "judged": sorted(judge_reports),
    }
    if judge_reports:  # a judge may score on one run what it failed on another: rows and judge.json are this run's
        identity["judged_scores"] = {
            side: {m: [v if math.isfinite(v) else None for v in scored[m]] for m in JUDGED_METRICS}
            for side, scored in (("challenger", chall_rows), ("champion", champ_rows))
        }
    digest = digest_json(identity)
    staged = artifacts.staging("eval")
    write_jsonl(staged / "rows.jsonl", rows)
    if judge_reports:
        text = json.dumps({label: r.model_dump() for label, r in judge_reports.items()}, indent=2)
        (staged / "judge.json").write_text(text, encoding="utf-8")
    _, path = artifacts.commit("evals", staged, digest)
    return EvalReport(
        digest=digest,
        parents=(challenger.digest, champion.digest, job.dataset_digest, job.index_digest),
        prompt_version=job.prompts[0].version,
        dataset_digest=job.dataset_digest,
        index_digest=job.index_digest,
        challenger=chall_scores,
        champion=champ_scores,
        retrieval=retrieval_summary,
        per_question={
            m: PairedScores(challenger=tuple(chall_rows[m]), champion=tuple(champ_rows[m])) for m in paired_metrics
        },
        slice_labels={name: tuple(i.labels[name] for i in items) for name in settings.slice_fields},
        rows_path=str(Path(path) / "rows.jsonl"),
        n_questions=len(items),
        judge_failures=dict(sum((Counter(r.reasons) for r in judge_reports.values()), Counter())),
        engine=(answerer or TransformersAnswerer()).name,
        same_answers=same_answers(answers[challenger.label], answers[champion.label]),
    )


class MatrixCell(BaseModel):
    """One prompt version answered by one model variant."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    model: str
    model_digest: str
    metrics: dict[str, MetricSummary]
    paired: dict[str, PairedDifference] = Field(description="Against the reference cell, on the same questions.")


class MatrixReport(BaseModel):
    """Prompt versions x model variants on the same questions and retrieval.

    Every cell is compared with the reference cell (the first prompt with the first model:
    production's prompt and model) by the paired difference the gate uses.
    """

    model_config = ConfigDict(frozen=True)

    digest: str
    reference: str
    cells: tuple[MatrixCell, ...]
    n_questions: int
    rows_path: str

    def table(self, metric: str) -> list[dict[str, Any]]:
        """One row per cell, for a table artifact: mean, its 95% interval and the paired gain."""
        rows = []
        for cell in self.cells:
            s, d = cell.metrics[metric], cell.paired[metric]
            rows.append(
                {
                    "prompt": cell.prompt,
                    "model": cell.model,
                    metric: round(s.mean, 4),
                    "95% CI": f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
                    f"paired gain vs {self.reference}": d.describe(),
                }
            )
        return rows

    def markdown(self, metric: str) -> str:
        """The table as markdown."""
        rows = self.table(metric)
        head = list(rows[0]) if rows else []
        lines = [
            f"# Prompt x model matrix ({metric}, {self.n_questions} questions)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def evaluate_matrix(
    prompts: list[PromptSpec],
    models: list[ModelUnderTest],
    eval_rows: list[dict[str, str]],
    retrieval: Retrieval,
    settings: EvaluationSettings,
    artifacts: ArtifactStore,
    confidence: float = 0.95,
    answerer: Answerer | None = None,
) -> MatrixReport:
    """Answer the eval set with every prompt and model; compare each cell with the first prompt x first model.

    Raises:
        ConfigError: a prompt needs a variable evaluation does not supply (before any model loads).
        StageError: nothing to evaluate.
    """
    if not eval_rows or not prompts or not models:
        raise StageError("the evaluation matrix needs eval rows, at least one prompt and one model")
    for prompt in prompts:
        prompt.require(EVAL_VARIABLES)
    items = retrieve(eval_rows, retrieval.store, retrieval.embedder, settings.top_k, settings.slice_fields)
    metrics = ragas_metrics(retrieval.embedder)
    scores: dict[tuple[int, int], dict[str, list[float]]] = {}
    answers: dict[tuple[int, int], list[str]] = {}
    for m, model in enumerate(models):
        for p, prompt in enumerate(prompts):
            answers[p, m] = answers_for(model, prompt, items, settings.max_new_tokens, artifacts, answerer=answerer)
            scores[p, m] = ragas_scores(items, answers[p, m], metrics, ANSWER_METRICS)
    reference = scores[0, 0]
    cells = []
    for m, model in enumerate(models):
        for p, prompt in enumerate(prompts):
            cell = scores[p, m]
            cells.append(
                MatrixCell(
                    prompt=prompt.version,
                    model=model.label,
                    model_digest=model.digest,
                    metrics={k: summarize(v, settings.bootstrap_samples, settings.seed) for k, v in cell.items()},
                    paired={
                        k: paired_difference(v, reference[k], confidence, settings.bootstrap_samples, settings.seed)
                        for k, v in cell.items()
                    },
                )
            )
    digest = digest_json(
        {
            "prompts": [p.digest for p in prompts],
            "models": [m.digest for m in models],
            "rows": digest_json(eval_rows),
            "settings": settings.model_dump(mode="json"),
        }
    )
    staged = artifacts.staging("matrix")
    write_jsonl(
        staged / "rows.jsonl",
        [
            {
                "question": item.question,
                "reference": item.reference,
                **{f"{prompts[p].version} | {models[m].label}": answers[p, m][k] for p, m in answers},
                **{
                    f"{prompts[p].version} | {models[m].label} | rouge_l": scores[p, m]["rouge_l"][k] for p, m in scores
                },
            }
            for k, item in enumerate(items)
        ],
    )
    _, path = artifacts.commit("matrices", staged, digest)
    return MatrixReport(
        digest=digest,
        reference=f"{prompts[0].version} | {models[0].label}",
        cells=tuple(cells),
        n_questions=len(items),
        rows_path=str(Path(path) / "rows.jsonl"),
    )


def log_matrix(report: MatrixReport, metric: str, tracker: Tracker) -> str | None:
    """The matrix as the table ``prompt_matrix`` of one tracker run; returns the run id (``None``: tracking is off)."""
    rows = report.table(metric)
    columns = list(rows[0]) if rows else []
    return tracker.log_table(
        "prompt_matrix",
        columns,
        [[r[c] for c in columns] for r in rows],
        job_type="prompt-matrix",
        config={"matrix": report.digest, "metric": metric},
    )

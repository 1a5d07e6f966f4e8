"""Evaluate challenger against champion: retrieve, answer, score with Ragas.

Both models answer the same eval questions with the same retrieved context, and with the same
prompt (a model release) or each with its own (a prompt-only release: one model, two prompts); the
answers are scored with Ragas metrics that need no LLM judge. Every per-row score is kept,
and each metric is summarised as a mean with a bootstrap confidence interval, overall and
per question type.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lockgate._io import write_jsonl
from lockgate.digest import digest_json
from lockgate.embeddings import Embedder, resolve_model_path
from lockgate.errors import StageError
from lockgate.metrics import ANSWER_METRICS, RETRIEVAL_METRICS
from lockgate.prompts import EVAL_VARIABLES, PromptSpec
from lockgate.records import BaseModelArtifact, EvalReport, MetricSummary, ModelScores, PairedScores
from lockgate.registry import ModelVersion
from lockgate.settings import EvaluationSettings
from lockgate.store import LocalArtifactStore
from lockgate.vectorstore import VectorStore

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
    """The engines evaluation retrieves context with."""

    store: VectorStore
    embedder: Embedder
    embedding_model: str


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
) -> list[str]:
    """Greedy answers of one model to every question, given its retrieved context.

    Raises:
        ConfigError: the prompt needs a variable evaluation does not supply (before any model loads).
    """
    prompt.require(EVAL_VARIABLES)
    import torch

    from lockgate.hf import load_causal_lm

    model, tok = load_causal_lm(model_path)
    answers = []
    with torch.inference_mode():
        for i, item in enumerate(items):
            text = prompt.render({"question": item.question, "context": " ".join(item.contexts)})
            ids = tok(text, return_tensors="pt")
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            answers.append(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
            if progress:
                progress(i + 1, len(items))
    return answers


def _ragas_metrics(embedding_model: str) -> dict[str, Any]:
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.embeddings.huggingface_provider import HuggingFaceEmbeddings
        from ragas.metrics import (
            BleuScore,
            ChrfScore,
            NonLLMContextPrecisionWithReference,
            NonLLMContextRecall,
            NonLLMStringSimilarity,
            RougeScore,
            SemanticSimilarity,
        )
    emb = HuggingFaceEmbeddings(model=resolve_model_path(embedding_model))
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
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return MetricSummary(mean=math.nan, ci_low=math.nan, ci_high=math.nan, n=int(arr.size))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(samples, arr.size))].mean(axis=1)
    return MetricSummary(
        mean=float(arr.mean()),
        ci_low=float(np.quantile(means, 0.025)),
        ci_high=float(np.quantile(means, 0.975)),
        n=int(arr.size),
    )


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


def evaluate_models(
    job: EvalJob,
    retrieval: Retrieval,
    settings: EvaluationSettings,
    artifacts: LocalArtifactStore,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Answer the eval set with both models and score them on identical inputs."""
    if not job.eval_rows:
        raise StageError("the eval split is empty")
    for prompt in job.prompts:  # a prompt that cannot render fails here, before retrieval and models
        prompt.require(EVAL_VARIABLES)
    challenger, champion = job.challenger, job.champion
    prompts = {challenger.label: job.prompts[0], champion.label: job.prompts[1]}
    items = retrieve(job.eval_rows, retrieval.store, retrieval.embedder, settings.top_k, settings.slice_fields)
    metrics = _ragas_metrics(retrieval.embedding_model)
    answers = {}
    for model in (challenger, champion):
        cb = (lambda done, total, label=model.label: progress(label, done, total)) if progress else None
        answers[model.label] = generate_answers(model.path, items, settings.max_new_tokens, prompts[model.label], cb)
    chall_scores, chall_rows = score_model(challenger, items, answers[challenger.label], metrics, settings)
    champ_scores, champ_rows = score_model(champion, items, answers[champion.label], metrics, settings)
    retrieval_rows = ragas_scores(items, answers[challenger.label], metrics, RETRIEVAL_METRICS)
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
                **{f"challenger_{m}": chall_rows[m][k] for m in ANSWER_METRICS},
                **{f"champion_{m}": champ_rows[m][k] for m in ANSWER_METRICS},
                **{m: retrieval_rows[m][k] for m in RETRIEVAL_METRICS},
            }
        )
    digest = digest_json(
        {
            "challenger": challenger.digest,
            "champion": champion.digest,
            "data": job.dataset_digest,
            "index": job.index_digest,
            "prompt": job.prompts[0].version,
            "champion_prompt": job.prompts[1].version,
            "settings": settings.model_dump(),
        }
    )
    staged = artifacts.staging("eval")
    write_jsonl(staged / "rows.jsonl", rows)
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
            m: PairedScores(challenger=tuple(chall_rows[m]), champion=tuple(champ_rows[m])) for m in ANSWER_METRICS
        },
        slice_labels={name: tuple(i.labels[name] for i in items) for name in settings.slice_fields},
        rows_path=str(Path(path) / "rows.jsonl"),
        n_questions=len(items),
    )

"""Challenger-vs-champion evaluation task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lockgate._io import load_jsonl
from lockgate.answering import open_answerer
from lockgate.evaluate import (
    EvalJob,
    MatrixReport,
    ModelUnderTest,
    Retrieval,
    choose_champion,
    evaluate_matrix,
    evaluate_models,
    log_matrix,
)
from lockgate.judge import judge_complete, judge_config
from lockgate.metrics import ANSWER_METRICS, JUDGED_METRICS
from lockgate.prompts import PromptSpec, find_prompt
from lockgate.records import BaseModelArtifact, DatasetSnapshot, EvalReport, IndexBuild, QuantizedModel
from lockgate.settings import EmbeddingSettings, EvaluationSettings, VectorStoreSettings
from lockgate.stats import paired_difference
from lockgate.stores import open_store
from lockgate.tracking import open_tracker
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, StageCache, embedder_of


@dataclass(frozen=True)
class EvalInputs:
    """What one evaluation compares: two models (each with its prompt) on an eval set, with retrieval.

    Every field enters the evaluate stage's cache key: records by their content digest (the index's
    digest, not the counts of the refresh that produced it, which differ between a first build and a
    no-op re-run), the prompts by their content, the embedder by its weights' digest.

    Attributes:
        candidate: the challenger (a quantized model, or a registered one in a prompt-only release).
        champion: the model to beat.
        snapshot: the dataset whose eval split is asked.
        index: the index build retrieval searches.
        embedder_weights: the embedder's content digest.
        prompt: the challenger's prompt.
        champion_prompt: the champion's prompt (a prompt-only release: production's); default ``prompt``.
    """

    candidate: QuantizedModel | ModelUnderTest
    champion: ModelUnderTest
    snapshot: DatasetSnapshot
    index: IndexBuild
    embedder_weights: str
    prompt: PromptSpec
    champion_prompt: PromptSpec | None = None


@dataclass(frozen=True)
class MatrixInputs:
    """What the evaluation matrix crosses (prompt versions x model variants), on which eval set and index."""

    prompts: list[PromptSpec]
    models: list[ModelUnderTest]
    snapshot: DatasetSnapshot
    index: IndexBuild


@task(name="find-champion", cache_policy=DEFAULT_BUT_WORKSPACE)
def find_champion(*, base: BaseModelArtifact, candidate_digest: str, workspace: Workspace) -> ModelUnderTest:
    """The model to beat: production (or what it replaced, if the candidate is production), else the base."""
    production = workspace.registry.champion_for(candidate_digest)
    if production is not None:  # registered under another store root if the state folder moved
        production = production.model_copy(update={"path": workspace.artifacts.locate(production.path)})
    return choose_champion(production, base)


@task(name="serving-prompt", cache_policy=DEFAULT_BUT_WORKSPACE)
def serving_prompt(*, name: str, prompts_dir: str, workspace: Workspace) -> PromptSpec:
    """The prompt a model release evaluates with: production's (the configured file's before the first one)."""
    configured, _ = find_prompt(Path(prompts_dir), name)
    spec = workspace.prompts(name).serving(configured)
    get_run_logger().info("prompt: %s (production)", spec.version)
    return spec


@task(
    name="evaluate",
    cache_policy=StageCache(
        stage="evaluate",
        modules=("lockgate.evaluate",),
        ignore=("workspace",),
        reusable=judge_complete,  # a report with a failed judge call is re-evaluated: the judge may answer now
    ),
    persist_result=True,
    result_serializer="json",
)
def evaluate_candidate(
    *,
    inputs: EvalInputs,
    evaluation: EvaluationSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    workspace: Workspace,
) -> EvalReport:
    """Answer the eval questions with retrieval and both models; score with Ragas (no LLM judge).

    The challenger answers with ``inputs.prompt``, the champion with ``inputs.champion_prompt`` (a
    prompt-only release: the production prompt) or the same.
    """
    logger = get_run_logger()
    candidate, champion, index = inputs.candidate, inputs.champion, inputs.index
    challenger = (
        candidate
        if isinstance(candidate, ModelUnderTest)
        else ModelUnderTest(label="challenger", digest=candidate.digest, path=candidate.path)
    )

    def progress(label: str, done: int, total: int) -> None:
        if done == total or done % 20 == 0:
            logger.info("%s: answered %d/%d", label, done, total)

    job = EvalJob(
        challenger=challenger,
        champion=champion,
        eval_rows=load_jsonl(Path(inputs.snapshot.eval_path)),
        dataset_digest=inputs.snapshot.digest,
        index_digest=index.digest,
        prompt=inputs.prompt,
        champion_prompt=inputs.champion_prompt,
    )
    engines = Retrieval(
        store=open_store(vector_store.backend, index.uri, index.collection, vector_store),
        embedder=embedder_of(embeddings, workspace.exported_models),
    )
    judge = judge_config(evaluation)  # the key is read from the environment here, never a parameter
    answerer = open_answerer(evaluation, workspace.logs)
    logger.info("questions answered by %s", answerer.name)
    report = evaluate_models(
        job, engines, evaluation, workspace.artifacts, progress=progress, judge=judge, answerer=answerer
    )
    if judge is not None:
        publish_judge_report(Path(report.rows_path).parent / "judge.json", judge.model)
    rows = []
    for metric in ANSWER_METRICS + tuple(m for m in JUDGED_METRICS if m in report.per_question):
        c, b = report.challenger.metrics[metric], report.champion.metrics[metric]
        rows.append(
            {
                "metric": metric,
                "challenger": round(c.mean, 4),
                "challenger 95% CI": f"[{c.ci_low:.3f}, {c.ci_high:.3f}]",
                "champion": round(b.mean, 4),
                "champion 95% CI": f"[{b.ci_low:.3f}, {b.ci_high:.3f}]",
                "paired gain 95% CI": _paired(report, metric, evaluation),
            }
        )
    for metric, s in report.retrieval.items():
        rows.append(
            {
                "metric": f"retrieval: {metric}",
                "challenger": round(s.mean, 4),
                "challenger 95% CI": f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
                "champion": "same retriever",
                "champion 95% CI": "",
                "paired gain 95% CI": "",
            }
        )
    create_table_artifact(
        key="eval-report",
        table=rows,
        description=f"Ragas: challenger vs {champion.label}, {report.n_questions} questions, "
        f"prompt {report.prompt_version}",
    )
    examples = load_jsonl(Path(report.rows_path))[:8]
    create_markdown_artifact(
        key="eval-examples",
        markdown="# Example answers\n\n| question | reference | challenger | champion |\n|---|---|---|---|\n"
        + "\n".join(
            f"| {_cell(r['question'])} | {_cell(r['reference'])} | {_cell(r['challenger'])} | {_cell(r['champion'])} |"
            for r in examples
        ),
        description="The first eval questions with both models' answers",
    )
    logger.info(
        "rouge_l: challenger %.3f vs champion %.3f",
        report.challenger.metrics["rouge_l"].mean,
        report.champion.metrics["rouge_l"].mean,
    )
    return report


def publish_judge_report(path: Path, model: str) -> None:
    """The judge's calls, latency and missing scores, in the log and as a table artifact."""
    logger = get_run_logger()
    reports = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for label, r in reports.items():
        logger.info(
            "judge %s on %s: %d calls, p50 %.0f ms, p95 %.0f ms, missing %s, reasons %s",
            model,
            label,
            r["calls"],
            r["latency_ms_p50"],
            r["latency_ms_p95"],
            r["missing"],
            r["reasons"],
        )
        for example in r["examples"]:
            logger.warning("judge %s: %s", label, example)
        rows.append(
            {
                "answers of": label,
                "judge calls": r["calls"],
                "p50 ms": round(r["latency_ms_p50"], 1),
                "p95 ms": round(r["latency_ms_p95"], 1),
                "missing": ", ".join(f"{m}: {n}" for m, n in r["missing"].items()),
                "why": ", ".join(f"{k}: {n}" for k, n in r["reasons"].items()) or "-",
            }
        )
    create_table_artifact(key="eval-judge", table=rows, description=f"LLM judge {model}: calls, latency, missing")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


def _paired(report: EvalReport, metric: str, evaluation: EvaluationSettings) -> str:
    scores = report.per_question[metric]
    diff = paired_difference(scores.challenger, scores.champion, 0.95, evaluation.bootstrap_samples, evaluation.seed)
    return diff.describe()


@task(name="prompt-matrix", cache_policy=DEFAULT_BUT_WORKSPACE)
def evaluate_prompt_matrix(
    *,
    matrix: MatrixInputs,
    evaluation: EvaluationSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    workspace: Workspace,
    metric: str = "rouge_l",
) -> MatrixReport:
    """Every prompt version with every model variant on the eval set: a table with paired intervals
    against production's prompt and model, as a Prefect artifact and a W&B table (offline by default)."""
    logger = get_run_logger()
    prompts, models, index = matrix.prompts, matrix.models, matrix.index
    engines = Retrieval(
        store=open_store(vector_store.backend, index.uri, index.collection, vector_store),
        embedder=embedder_of(embeddings, workspace.exported_models),
    )
    report = evaluate_matrix(
        prompts,
        models,
        load_jsonl(Path(matrix.snapshot.eval_path)),
        engines,
        evaluation,
        workspace.artifacts,
        answerer=open_answerer(evaluation, workspace.logs),
    )
    if metric not in ANSWER_METRICS:  # the matrix scores without a judge: a judged policy metric is not in it
        logger.info("the matrix has no LLM-judged %s; its table shows rouge_l", metric)
        metric = "rouge_l"
    create_markdown_artifact(
        key="prompt-matrix",
        markdown=report.markdown(metric),
        description=f"{len(prompts)} prompt version(s) x {len(models)} model(s), paired against {report.reference}",
    )
    registry = workspace.registry_settings
    try:
        tracker = open_tracker(
            "wandb", project=registry.wandb_project, mode=registry.wandb_mode, directory=workspace.home / "wandb"
        )
        run_id = log_matrix(report, metric, tracker)
        logger.info("matrix logged to W&B run %s (%s)", run_id, registry.wandb_mode)
    except Exception as exc:  # tracking never fails an evaluation
        logger.warning("W&B logging of the matrix failed (%s: %s)", type(exc).__name__, exc)
    return report

"""Embedding drift task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.drift import (
    AlarmBook,
    commit_html_report,
    describe_verdict,
    detect_drift,
    drift_questions,
    production_questions,
    too_few_rows,
    training_questions,
)
from lockgate.querylog import QueryLogRead, QueryWindow, read_query_windows
from lockgate.records import DatasetSnapshot, DriftReport, QueryDrift
from lockgate.references import reference_vectors
from lockgate.registry import drift_reference
from lockgate.settings import DriftSettings, EmbeddingSettings
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, StageCache, artifact_key, embedder_of


@dataclass(frozen=True)
class DriftInputs:
    """What one drift check compares: reference and current texts of a dataset, and the embedder by content.

    Every field enters the drift stage's cache key (``embedder_weights`` is the embedder's content digest).
    """

    reference_texts: list[str]
    current_texts: list[str]
    dataset_name: str
    dataset_digest: str
    embedder_weights: str


@task(name="drift-inputs", cache_policy=DEFAULT_BUT_WORKSPACE)
def drift_inputs(*, snapshot: DatasetSnapshot, workspace: Workspace) -> tuple[list[str], list[str]]:
    """Reference texts (production's training questions) and current texts (the eval questions)."""
    reference = drift_reference(workspace.registry)
    if reference is not None:  # recorded under another store root if the state folder moved
        reference = workspace.artifacts.locate(reference)
    return drift_questions(reference, snapshot.train_path, snapshot.eval_path)


@task(
    name="drift",
    cache_policy=StageCache(stage="drift", modules=("lockgate.drift",), ignore=("workspace",)),
    persist_result=True,
    result_serializer="json",
)
def check_drift(
    *, inputs: DriftInputs, drift: DriftSettings, embeddings: EmbeddingSettings, workspace: Workspace
) -> DriftReport:
    """Evidently embedding drift of the current texts against the reference; HTML report beside."""
    logger = get_run_logger()
    embedder = embedder_of(embeddings, workspace.exported_models)
    reference_texts, current_texts = inputs.reference_texts, inputs.current_texts
    reference = reference_vectors(reference_texts, embedder, workspace.artifacts, workspace.signing).vectors
    current = embedder.encode(current_texts)
    report = detect_drift(
        reference,
        current,
        drift,
        store=workspace.artifacts if drift.html_report else None,
        dataset_digest=inputs.dataset_digest,
        texts=(reference_texts, current_texts),
    )
    if report.html_path:
        create_link_artifact(
            key="drift-html",
            link=Path(report.html_path).resolve().as_uri(),
            link_text="Evidently drift report",
            description="Open in a browser (a local file)",
        )
    verdict = "DRIFT" if report.drifted else "no drift"
    logger.info("drift: %s -> %s", describe_verdict(report), verdict)
    create_markdown_artifact(
        key="drift",
        markdown="\n".join(
            [
                f"# Embedding drift: {verdict}",
                "",
                f"- {describe_verdict(report)}",
                f"- reference rows: {report.n_reference}, current rows: {report.n_current}",
                f"- dataset: `{report.dataset_digest}`",
                f"- HTML report: `{report.html_path}`" if report.html_path else "- HTML report: off",
            ]
        ),
        description="Are the current questions still like the reference?",
    )
    if report.drifted:
        emit_event(
            event=events.DRIFT_DETECTED,
            resource=events.dataset_resource(inputs.dataset_name),
            payload={
                "score": report.score,
                "threshold": report.threshold,
                "method": report.method,
                "p_value": report.p_value,
                "report": report.digest,
                "dataset": inputs.dataset_digest,
            },
        )
    return report


@task(name="keep-reference", cache_policy=DEFAULT_BUT_WORKSPACE)
def keep_reference(*, snapshot: DatasetSnapshot, embeddings: EmbeddingSettings, workspace: Workspace) -> str:
    """Keep the promoted model's drift reference: its training questions' vectors under the
    configured embedder, with the embedder's identity (``lockgate.references``). Every later drift
    check against this production model loads them. Returns where they are kept."""
    texts = training_questions(Path(workspace.artifacts.locate(snapshot.train_path)))
    embedder = embedder_of(embeddings, workspace.exported_models)
    kept = reference_vectors(texts, embedder, workspace.artifacts, workspace.signing)
    get_run_logger().info(
        "drift reference of the promoted model: %d training questions, %s %s",
        len(texts),
        "embedded and kept in" if kept.computed else "kept already in",
        kept.path,
    )
    return str(kept.path)


@task(name="read-queries")
def read_queries(*, drift: DriftSettings, workspace: Workspace, now: float) -> QueryLogRead:
    """Each variant's window of the gateway's query log (``drift.query_window``, ``drift.query_hours``)."""
    since = now - drift.query_hours * 3600 if drift.query_hours else None
    read = read_query_windows(workspace.serving.query_log, drift.query_window, since)
    logger = get_run_logger()
    for window in read.windows.values():
        logger.info(
            "query log: %s served %d questions, %d in the window", window.variant, window.seen, len(window.questions)
        )
    if read.skipped:
        logger.warning("query log %s: %d lines were not query rows (skipped)", read.path, read.skipped)
    return read


@task(name="query-reference")
def query_reference(*, workspace: Workspace) -> list[str]:
    """Production's training questions: what served questions are compared with (``production_questions``)."""
    return production_questions(workspace.registry, workspace.artifacts)


@task(name="query-drift")
def check_query_drift(
    *,
    window: QueryWindow,
    reference_texts: list[str],
    deployment: str,
    drift: DriftSettings,
    embeddings: EmbeddingSettings,
    workspace: Workspace,
    now: float,
) -> QueryDrift:
    """One variant's served questions against production's training questions.

    The verdict is the fast path (no HTML). On a drift ``lockgate.drift.detected`` is emitted for
    ``lockgate.queries.<deployment>.<variant>`` and Evidently's report written (named in the
    ``query-drift-<variant>`` artifact and the event), unless that resource rang less than
    ``drift.cooldown_s`` ago. A window too small to judge is reported as such, never judged.
    """
    logger = get_run_logger()
    questions = list(window.questions)
    small = too_few_rows(len(reference_texts), len(questions), drift)
    if small is not None:
        logger.info("query drift of %s: not judged: %s", window.variant, small)
        return QueryDrift(variant=window.variant, questions=len(questions), models=window.models, not_judged=small)
    embedder = embedder_of(embeddings, workspace.exported_models)
    reference = reference_vectors(reference_texts, embedder, workspace.artifacts, workspace.signing).vectors
    current = embedder.encode(questions)
    fast = drift.model_copy(update={"html_report": False})
    report = detect_drift(reference, current, fast, store=workspace.artifacts, texts=(reference_texts, questions))
    resource = events.queries_resource(deployment, window.variant)
    alarm = "none"
    if report.drifted:
        rang = AlarmBook(workspace.home / "state" / "drift-alarms.json").ring(
            resource["prefect.resource.id"], now, drift.cooldown_s
        )
        alarm = "sent" if rang is None else "cooldown"
        if alarm == "sent" and drift.html_report:  # a drift that persists: its report was written when it rang
            report = commit_html_report(report, reference, current, drift, workspace.artifacts)
    verdict = "DRIFT" if report.drifted else "no drift"
    said = {"sent": "; event sent", "cooldown": "; no event: an alarm rang within drift.cooldown_s", "none": ""}[alarm]
    logger.info("query drift of %s: %s -> %s%s", window.variant, describe_verdict(report), verdict, said)
    create_markdown_artifact(
        key=f"query-drift-{artifact_key(window.variant)}",
        markdown="\n".join(
            [
                f"# Query drift of {window.variant}: {verdict}",
                "",
                f"- {describe_verdict(report)}",
                f"- the last {len(questions)} questions served, against production's {len(reference_texts)} "
                "training questions",
                f"- models: {', '.join(f'`{m}`' for m in window.models) or 'not recorded'}",
                f"- HTML report: `{report.html_path}`" if report.html_path else "- HTML report: written on a drift",
                f"- alarm: {alarm}",
            ]
        ),
        description="Are the questions users ask still like what production was trained on?",
    )
    if alarm == "sent":
        emit_event(
            event=events.DRIFT_DETECTED,
            resource=resource,
            payload={
                "kind": "queries",
                "variant": window.variant,
                "score": report.score,
                "threshold": report.threshold,
                "method": report.method,
                "p_value": report.p_value,
                "report": report.html_path or report.digest,
                "questions": len(questions),
                "models": list(window.models),
            },
        )
    return QueryDrift(
        variant=window.variant, questions=len(questions), models=window.models, report=report, alarm=alarm
    )

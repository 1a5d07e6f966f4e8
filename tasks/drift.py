"""Embedding drift task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.drift import (
    AlarmBook,
    commit_html_report,
    corpus_window,
    describe_verdict,
    detect_drift,
    drift_questions,
    production_questions,
    too_few_rows,
    training_questions,
)
from lockgate.errors import DataError
from lockgate.querylog import QueryLogRead, QueryWindow, read_query_windows
from lockgate.records import CorpusDrift, DatasetSnapshot, DriftReport, QueryDrift
from lockgate.references import CORPUS_BOOK, Reference, corpus_reference_texts, corpus_texts, reference_vectors
from lockgate.registry import drift_reference
from lockgate.settings import DataSettings, DriftSettings, EmbeddingSettings, VectorStoreSettings
from lockgate.stores.aliases import home_aliases
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, StageCache, artifact_key, embedder_of, record_on_dashboard
from tasks.index import corpus_chunks


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
    """Keep the promoted model's drift references: the vectors of the questions it was trained and
    judged on (its training and eval splits) under the configured embedder, with the embedder's
    identity (``lockgate.references``). Every later drift check against this production model
    loads them. Returns where the training questions' reference (the one drift compares with) is kept."""
    embedder = embedder_of(embeddings, workspace.exported_models)
    kept: dict[str, Reference] = {}
    for split, path in (("training", snapshot.train_path), ("eval", snapshot.eval_path)):
        texts = training_questions(Path(workspace.artifacts.locate(path)))
        kept[split] = reference_vectors(texts, embedder, workspace.artifacts, workspace.signing)
        get_run_logger().info(
            "drift reference of the promoted model: %d %s questions, %s %s",
            len(texts),
            split,
            "embedded and kept in" if kept[split].computed else "kept already in",
            kept[split].path,
        )
    return str(kept["training"].path)


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


Alarm = Literal["sent", "cooldown", "none"]
# What a log line adds for each alarm outcome.
SAID: dict[str, str] = {
    "sent": "; event sent",
    "cooldown": "; no event: an alarm rang within drift.cooldown_s",
    "none": "",
}


def judge_and_ring(
    reference_texts: list[str],
    current_texts: list[str],
    resource: dict[str, str],
    *,
    drift: DriftSettings,
    embeddings: EmbeddingSettings,
    workspace: Workspace,
    now: float,
) -> tuple[DriftReport, Alarm]:
    """The verdict of one scheduled drift check, on the fast path (no HTML), and whether its alarm rings.

    The reference's vectors are loaded when kept (``lockgate.references``). On a drift, the
    resource's alarm rings unless it rang less than ``drift.cooldown_s`` ago; when it rings,
    Evidently's report is written (a drift that persists had its report written when it rang).
    Without a drift, the report is written on schedule: when ``drift.report_every_s`` is set and
    the resource's last report is older than that.
    """
    embedder = embedder_of(embeddings, workspace.exported_models)
    reference = reference_vectors(reference_texts, embedder, workspace.artifacts, workspace.signing).vectors
    current = embedder.encode(current_texts)
    fast = drift.model_copy(update={"html_report": False})
    report = detect_drift(reference, current, fast, store=workspace.artifacts, texts=(reference_texts, current_texts))
    if not report.drifted:
        if drift.html_report and drift.report_every_s > 0:
            reports = AlarmBook(workspace.home / "state" / "drift-reports.json")
            if reports.ring(resource["prefect.resource.id"], now, drift.report_every_s) is None:
                report = commit_html_report(report, reference, current, drift, workspace.artifacts)
        return report, "none"
    rang = AlarmBook(workspace.home / "state" / "drift-alarms.json").ring(
        resource["prefect.resource.id"], now, drift.cooldown_s
    )
    if rang is not None:
        return report, "cooldown"
    if drift.html_report:
        report = commit_html_report(report, reference, current, drift, workspace.artifacts)
    return report, "sent"


def ring(resource: dict[str, str], report: DriftReport, **about: object) -> None:
    """``lockgate.drift.detected`` for ``resource``: the verdict (method, score, threshold, p-value,
    report) and what the check was ``about`` (its kind, and what it judged)."""
    emit_event(
        event=events.DRIFT_DETECTED,
        resource=resource,
        payload={
            **about,
            "score": report.score,
            "threshold": report.threshold,
            "method": report.method,
            "p_value": report.p_value,
            "report": report.html_path or report.digest,
        },
    )


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
    resource = events.queries_resource(deployment, window.variant)
    report, alarm = judge_and_ring(
        reference_texts, questions, resource, drift=drift, embeddings=embeddings, workspace=workspace, now=now
    )
    verdict = "DRIFT" if report.drifted else "no drift"
    logger.info("query drift of %s: %s -> %s%s", window.variant, describe_verdict(report), verdict, SAID[alarm])
    record_on_dashboard(
        workspace,
        "query-drift",
        {
            f"{window.variant}_query_drift_score": report.score,
            f"{window.variant}_query_drift_threshold": report.threshold,
        },
    )
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
        ring(
            resource,
            report,
            kind="queries",
            variant=window.variant,
            questions=len(questions),
            models=list(window.models),
        )
    return QueryDrift(
        variant=window.variant, questions=len(questions), models=window.models, report=report, alarm=alarm
    )


@task(name="corpus-drift")
def check_corpus_drift(
    *,
    corpus_dir: str,
    data: DataSettings,
    drift: DriftSettings,
    embeddings: EmbeddingSettings,
    vector_store: VectorStoreSettings,
    workspace: Workspace,
    now: float,
) -> CorpusDrift:
    """The corpus about to be indexed against the corpus reference of the collection that serves.

    A sample of the current chunks (``lockgate.references.corpus_texts``, as many as
    ``lockgate.drift.corpus_window`` allows) is judged against the sample kept when the serving
    generation was built. On a drift ``lockgate.drift.detected`` is
    emitted for ``lockgate.corpus.<vector_store.collection>`` (``prefect.yaml`` starts the refresh on
    it), at most once per ``drift.cooldown_s``. Too few chunks on a side is reported, never judged.

    Raises:
        DataError: nothing serves yet, or the serving collection has no corpus reference.
    """
    logger = get_run_logger()
    serving = home_aliases(workspace.home).serving(vector_store.collection)
    if serving is None:
        raise DataError(
            f"index {vector_store.collection}: nothing serves yet in {workspace.home}; "
            "run `python -m flows refresh` first"
        )
    reference_texts = corpus_reference_texts(
        workspace.home / CORPUS_BOOK, serving, workspace.artifacts, workspace.signing
    )
    embedder = embedder_of(embeddings, workspace.exported_models)
    # A sample of the current corpus, picked the same way as the reference's.
    chunks = corpus_chunks(corpus_dir, data, embeddings, embedder, workspace)
    current_texts = corpus_texts(chunks, cap=corpus_window(len(reference_texts)))
    small = too_few_rows(len(reference_texts), len(current_texts), drift)
    if small is not None:
        logger.info("corpus drift of %s: not judged: %s", serving, small)
        return CorpusDrift(
            collection=serving, chunks=len(current_texts), reference_chunks=len(reference_texts), not_judged=small
        )
    resource = events.corpus_resource(vector_store.collection)
    report, alarm = judge_and_ring(
        reference_texts, current_texts, resource, drift=drift, embeddings=embeddings, workspace=workspace, now=now
    )
    verdict = "DRIFT" if report.drifted else "no drift"
    logger.info("corpus drift of %s: %s -> %s%s", serving, describe_verdict(report), verdict, SAID[alarm])
    record_on_dashboard(
        workspace, "corpus-drift", {"corpus_drift_score": report.score, "corpus_drift_threshold": report.threshold}
    )
    create_markdown_artifact(
        key="corpus-drift",
        markdown="\n".join(
            [
                f"# Corpus drift of {vector_store.collection}: {verdict}",
                "",
                f"- {describe_verdict(report)}",
                f"- {len(current_texts)} of the {len(chunks)} chunks of `{corpus_dir}` against the "
                f"{len(reference_texts)} kept when "
                f"`{serving}` (serving) was built",
                f"- HTML report: `{report.html_path}`" if report.html_path else "- HTML report: written on a drift",
                f"- alarm: {alarm}",
            ]
        ),
        description="Is the corpus about to be indexed still like the one the serving index was built from?",
    )
    if alarm == "sent":
        ring(resource, report, kind="corpus", collection=serving, chunks=len(current_texts))
    return CorpusDrift(
        collection=serving,
        chunks=len(current_texts),
        reference_chunks=len(reference_texts),
        report=report,
        alarm=alarm,
    )

"""Embedding drift task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.drift import describe_verdict, detect_drift, drift_questions
from lockgate.records import DatasetSnapshot, DriftReport
from lockgate.registry import drift_reference
from lockgate.settings import DriftSettings, EmbeddingSettings
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, StageCache, embedder_of


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
    reference, current = embedder.encode(reference_texts), embedder.encode(current_texts)
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

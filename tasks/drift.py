"""Embedding drift task."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.artifacts import LocalArtifactStore
from lockgate.drift import detect_drift, drift_questions
from lockgate.records import DatasetSnapshot, DriftReport
from lockgate.registry import drift_reference, open_registry
from lockgate.settings import DriftSettings, EmbeddingSettings, RegistrySettings
from tasks.common import StageCache, embedder_of


@task(name="drift-inputs")
def drift_inputs(
    registry: RegistrySettings, registry_root: str, snapshot: DatasetSnapshot, artifacts_root: str
) -> tuple[list[str], list[str]]:
    """Reference texts (production's training questions) and current texts (the eval questions)."""
    reference = drift_reference(open_registry(registry, Path(registry_root)))
    if reference is not None:  # recorded under another store root if the state folder moved
        reference = LocalArtifactStore(Path(artifacts_root)).locate(reference)
    return drift_questions(reference, snapshot.train_path, snapshot.eval_path)


@task(
    name="drift",
    cache_policy=StageCache(stage="drift", modules=("lockgate.drift",), ignore=("artifacts_root",)),
    persist_result=True,
    result_serializer="json",
)
def check_drift(
    reference_texts: list[str],
    current_texts: list[str],
    drift: DriftSettings,
    embeddings: EmbeddingSettings,
    artifacts_root: str,
    dataset_name: str,
    dataset_digest: str,
    embedder_weights: str,
) -> DriftReport:
    """Evidently embedding drift of the current texts against the reference; HTML report beside.

    ``embedder_weights`` is the embedder's content digest, for the cache key.
    """
    logger = get_run_logger()
    embedder = embedder_of(embeddings, artifacts_root)
    reference, current = embedder.encode(reference_texts), embedder.encode(current_texts)
    report = detect_drift(
        reference,
        current,
        drift,
        store=LocalArtifactStore(Path(artifacts_root)) if drift.html_report else None,
        dataset_digest=dataset_digest,
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
    logger.info("drift (%s): score %.4f vs threshold %s -> %s", report.method, report.score, report.threshold, verdict)
    create_markdown_artifact(
        key="drift",
        markdown="\n".join(
            [
                f"# Embedding drift: {verdict}",
                "",
                f"- method: {report.method}, score {report.score:.4f}, threshold {report.threshold}",
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
            resource=events.dataset_resource(dataset_name),
            payload={
                "score": report.score,
                "threshold": report.threshold,
                "method": report.method,
                "report": report.digest,
                "dataset": dataset_digest,
            },
        )
    return report

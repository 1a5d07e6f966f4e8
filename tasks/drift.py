"""Embedding drift task."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.events import emit_event

from lockgate import events
from lockgate.digest import short
from lockgate.drift import detect_drift, drift_questions
from lockgate.records import DatasetSnapshot, DriftReport
from lockgate.registry import LocalRegistry
from lockgate.settings import DriftSettings, EmbeddingSettings
from tasks.common import embedder_for


@task(name="drift-inputs")
def drift_inputs(registry_root: str, snapshot: DatasetSnapshot) -> tuple[list[str], list[str]]:
    """Reference texts (production's training questions) and current texts (the eval questions)."""
    production = LocalRegistry(Path(registry_root)).get("production")
    train = production.lineage.get("dataset_train") if production else None
    return drift_questions(str(train) if train else None, snapshot.train_path, snapshot.eval_path)


@task(name="drift", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def check_drift(
    reference_texts: list[str],
    current_texts: list[str],
    drift: DriftSettings,
    embeddings: EmbeddingSettings,
    reports_dir: str,
    subject: str,
) -> DriftReport:
    """Evidently embedding drift of the current texts against the reference; HTML report beside."""
    logger = get_run_logger()
    embedder = embedder_for(embeddings.model, embeddings.batch_size)
    reference, current = embedder.encode(reference_texts), embedder.encode(current_texts)
    html = Path(reports_dir) / "drift" / f"{subject}.html" if drift.html_report else None
    report = detect_drift(reference, current, drift, html_path=html)
    if report.html_path:
        final = Path(report.html_path).with_name(f"{subject}-{short(report.digest, 12)}.html")
        Path(report.html_path).replace(final)
        report = report.model_copy(update={"html_path": str(final)})
        create_link_artifact(
            key="drift-html",
            link=final.resolve().as_uri(),
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
                f"- HTML report: `{report.html_path}`" if report.html_path else "- HTML report: off",
            ]
        ),
        description="Are the current questions still like the reference?",
    )
    if report.drifted:
        emit_event(
            event=events.DRIFT_DETECTED,
            resource=events.dataset_resource(subject),
            payload={"score": report.score, "threshold": report.threshold, "method": report.method},
        )
    return report

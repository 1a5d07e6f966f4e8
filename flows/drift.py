"""Drift check on its own schedule: are today's questions still like what production was trained on?"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.params import StageParams
from lockgate.artifacts import LocalArtifactStore
from lockgate.records import DatasetSnapshot, DriftReport
from lockgate.settings import LockgateSettings
from tasks.common import StageLog, fingerprints
from tasks.data import prepare_dataset
from tasks.drift import check_drift, drift_inputs


@flow(name="drift")
def drift(params: StageParams = StageParams()) -> DriftReport:  # noqa: B008 (the UI form's default)
    """Compare the current eval questions with the training questions of the production model
    (or of the current data, before anything is in production) using Evidently; emits
    ``lockgate.drift.detected`` when the score crosses the threshold.
    """
    settings = params.settings()
    snapshot = prepare_dataset(settings.sources, settings.data, settings.artifacts_dir)
    stages = StageLog(artifacts=LocalArtifactStore(Path(settings.artifacts_dir)))
    return check_drift_here(stages, settings, snapshot, fingerprints(settings).embedder_weights)


def check_drift_here(
    stages: StageLog, settings: LockgateSettings, snapshot: DatasetSnapshot, embedder_weights: str
) -> DriftReport:
    """Drift of this snapshot's questions against production's training questions, through the
    stage log (a cached report made for another state folder is rebuilt here, not borrowed)."""
    reference, current = drift_inputs(settings.registry, settings.registry_dir, snapshot, settings.artifacts_dir)
    return stages.run_cached(
        "drift",
        check_drift,
        reference,
        current,
        settings.drift,
        settings.embeddings,
        settings.artifacts_dir,
        settings.data.name,
        snapshot.digest,
        embedder_weights,
    )

"""Drift check on its own schedule: are today's questions still like what production was trained on?"""

from __future__ import annotations

from prefect import flow

from flows.params import StageParams
from lockgate.records import DatasetSnapshot, DriftReport
from lockgate.settings import LockgateSettings
from lockgate.workspace import Workspace
from tasks.common import StageLog, fingerprints
from tasks.data import prepare_dataset
from tasks.drift import DriftInputs, check_drift, drift_inputs


@flow(name="drift")
def drift(params: StageParams = StageParams()) -> DriftReport:  # noqa: B008 (the UI form's default)
    """Compare the current eval questions with the training questions of the production model
    (or of the current data, before anything is in production) using Evidently; emits
    ``lockgate.drift.detected`` when the score crosses the threshold.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    snapshot = prepare_dataset(sources=settings.sources, data=settings.data, workspace=workspace)
    return check_drift_here(
        stages=StageLog(artifacts=workspace.artifacts),
        settings=settings,
        workspace=workspace,
        snapshot=snapshot,
        embedder_weights=fingerprints(settings).embedder_weights,
    )


def check_drift_here(
    *,
    stages: StageLog,
    settings: LockgateSettings,
    workspace: Workspace,
    snapshot: DatasetSnapshot,
    embedder_weights: str,
) -> DriftReport:
    """Drift of this snapshot's questions against production's training questions, through the
    stage log (a cached report made for another state folder is rebuilt here, not borrowed)."""
    reference, current = drift_inputs(snapshot=snapshot, workspace=workspace)
    inputs = DriftInputs(
        reference_texts=reference,
        current_texts=current,
        dataset_name=settings.data.name,
        dataset_digest=snapshot.digest,
        embedder_weights=embedder_weights,
    )
    return stages.run_cached(
        "drift", check_drift, inputs=inputs, drift=settings.drift, embeddings=settings.embeddings, workspace=workspace
    )

"""Drift check on its own schedule: are today's questions still like what production was trained on?"""

from __future__ import annotations

from prefect import flow

from flows.params import StageParams
from lockgate.records import DriftReport
from tasks.data import prepare_dataset
from tasks.drift import check_drift, drift_inputs


@flow(name="drift")
def drift(params: StageParams = StageParams()) -> DriftReport:  # noqa: B008 (the UI form's default)
    """Compare the current eval questions with the training questions of the production model
    (or of the current data, before anything is in production) using Evidently; emits
    ``lockgate.drift.detected`` when the score crosses the threshold.
    """
    settings = params.settings()
    sources = [str(settings.resolve(s)) for s in settings.data.sources]
    snapshot = prepare_dataset(sources, settings.data, settings.artifacts_dir)
    reference, current = drift_inputs(settings.registry_dir, snapshot)
    return check_drift(
        reference, current, settings.drift, settings.embeddings, str(settings.home_path / "reports"), settings.data.name
    )

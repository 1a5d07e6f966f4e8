"""Drift checks on their own schedules: are today's questions, and the questions users really ask,
still like what production was trained on? Is the corpus still like the one the serving index was built from?"""

from __future__ import annotations

import time

from prefect import flow

from flows.params import CorpusDriftParams, QueryDriftParams, StageParams
from lockgate.records import CorpusDrift, DatasetSnapshot, DriftReport, QueryDrift
from lockgate.settings import LockgateSettings
from lockgate.workspace import Workspace
from tasks.common import StageLog, fingerprints
from tasks.data import prepare_dataset
from tasks.drift import (
    DriftInputs,
    check_corpus_drift,
    check_drift,
    check_query_drift,
    drift_inputs,
    query_reference,
    read_queries,
)


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


@flow(name="query-drift")
def query_drift(params: QueryDriftParams = QueryDriftParams()) -> list[QueryDrift]:  # noqa: B008 (the UI form's default)
    """Compare the last questions each variant served (the gateway's query log) with production's
    training questions; emits ``lockgate.drift.detected`` for ``lockgate.queries.<name>.<variant>``
    on a drift, at most once per ``drift.cooldown_s``.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    now = time.time()
    read = read_queries(drift=settings.drift, workspace=workspace, now=now)
    reference = query_reference(workspace=workspace)
    return [
        check_query_drift(
            window=window,
            reference_texts=reference,
            deployment=settings.data.name,
            drift=settings.drift,
            embeddings=settings.embeddings,
            workspace=workspace,
            now=now,
        )
        for window in read.windows.values()
    ]


@flow(name="corpus-drift")
def corpus_drift(params: CorpusDriftParams = CorpusDriftParams()) -> CorpusDrift:  # noqa: B008 (the UI form's default)
    """Compare the corpus about to be indexed (data.corpus_dir) with the sample kept when the serving
    index generation was built; emits ``lockgate.drift.detected`` for ``lockgate.corpus.<collection>``
    on a drift (at most once per ``drift.cooldown_s``), which starts the refresh.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    return check_corpus_drift(
        corpus_dir=str(settings.resolve(settings.data.corpus_dir)),
        data=settings.data,
        drift=settings.drift,
        embeddings=settings.embeddings,
        vector_store=settings.vector_store,
        workspace=workspace,
        now=time.time(),
    )

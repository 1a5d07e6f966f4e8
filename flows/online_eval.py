"""Online evaluation: how well the served variants do on the questions users really ask."""

from __future__ import annotations

import time

from prefect import flow

from flows.params import QueryDriftParams
from lockgate.records import OnlineQuality
from lockgate.workspace import Workspace
from tasks.drift import read_queries
from tasks.online import (
    OnlineEvalSettings,
    act_on_online_quality,
    compare_online_quality,
    measure_online_quality,
    ratings_of,
    record_online,
    served_variants,
)


@flow(name="online-eval")
def online_eval(params: QueryDriftParams = QueryDriftParams()) -> list[OnlineQuality]:  # noqa: B008 (the UI form's default)
    """The last questions each variant served (the query log's window, as query drift reads it):
    the similarity of each one's best retrieved chunk, the share with no context above
    ``monitoring.context_floor``, the ratings users sent and, with a judge configured
    (``evaluation.judge_base_url``), the judged faithfulness of ``monitoring.judge_sample`` of the
    logged answers to their retrieved context; a variant rated significantly worse
    than production is named, and when it is the canary, rolled back
    (``monitoring.rollback_on_quality``). The window's quality goes on the dashboard beside
    Prometheus' latency, tokens/s, errors and queue depth. Started by ``lockgate.drift.detected`` on
    served questions.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    read = read_queries(drift=settings.drift, workspace=workspace, now=time.time())
    variants = served_variants(workspace=workspace)
    ratings = ratings_of(workspace=workspace)
    watched = OnlineEvalSettings(
        monitoring=settings.monitoring,
        embeddings=settings.embeddings,
        vector_store=settings.vector_store,
        serving=settings.serving,
        evaluation=settings.evaluation,
    )
    qualities = [
        measure_online_quality(
            window=window,
            variant=variants.get(name),
            ratings=ratings,
            settings=watched,
            workspace=workspace,
        )
        for name, window in read.windows.items()
    ]
    compared = compare_online_quality(qualities=qualities, monitoring=settings.monitoring)
    record_online(qualities=compared, monitoring=settings.monitoring, workspace=workspace)
    act_on_online_quality(
        qualities=compared, monitoring=settings.monitoring, prompt_name=settings.prompts.name, workspace=workspace
    )
    return compared

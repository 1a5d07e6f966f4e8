"""Online evaluation tasks: the served questions' retrieval and their users' ratings, per variant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from lockgate.dashboard import prometheus_values
from lockgate.errors import TransientError
from lockgate.judge import judge_config, judged_scores
from lockgate.online import against_production, canary_rated_worse, judge_sample, online_quality, read_ratings
from lockgate.querylog import QueryWindow
from lockgate.records import OnlineQuality
from lockgate.serving import Variant, load_manifest, roll_back_canary
from lockgate.serving.manifest import SwapOutcome, swap_manifest
from lockgate.settings import (
    EmbeddingSettings,
    EvaluationSettings,
    MonitoringSettings,
    ServingSettings,
    VectorStoreSettings,
)
from lockgate.stores import open_store
from lockgate.workspace import Workspace
from tasks.common import embedder_of, record_on_dashboard


@dataclass(frozen=True)
class OnlineEvalSettings:
    """The settings an online evaluation of one variant reads (a typed bundle, not seven arguments)."""

    monitoring: MonitoringSettings
    embeddings: EmbeddingSettings
    vector_store: VectorStoreSettings
    serving: ServingSettings
    evaluation: EvaluationSettings


@task(name="served-variants")
def served_variants(*, workspace: Workspace) -> dict[str, Variant]:
    """The variants the serving manifest names (none before the first deploy)."""
    if not workspace.serving.manifest.is_file():
        return {}
    return {v.name: v for v in load_manifest(workspace.serving.manifest).variants}


@task(name="read-ratings")
def ratings_of(*, workspace: Workspace) -> dict[str, int]:
    """Every rating the gateway's feedback log holds, by completion id."""
    return read_ratings(workspace.serving.feedback_log)


@task(name="online-quality")
def measure_online_quality(
    *,
    window: QueryWindow,
    variant: Variant | None,
    ratings: dict[str, int],
    settings: OnlineEvalSettings,
    workspace: Workspace,
) -> OnlineQuality:
    """One variant's window: each question's best chunk in the index that variant serves from, the
    ratings of its answers and, where a judge is configured, the judged faithfulness of a sample of
    its logged answers to the chunks the gateway retrieves for them (``serving.top_k``). A variant
    without an index (no RAG) has no similarity to report and no context to judge against."""
    logger = get_run_logger()
    monitoring = settings.monitoring
    questions = list(window.questions)
    contexts: list[list[str]] = [[] for _ in questions]
    if variant is not None and variant.index_uri and variant.index_collection and questions:
        embedder = embedder_of(settings.embeddings, workspace.exported_models)
        store = open_store(
            settings.vector_store.backend, variant.index_uri, variant.index_collection, settings.vector_store
        )
        hits = store.search(embedder.encode(questions), max(1, settings.serving.top_k))
        top = [h[0].score if h else -1.0 for h in hits]
        contexts = [[hit.text for hit in h[: settings.serving.top_k]] for h in hits]
    else:
        top = [math.nan] * len(questions)
    faithfulness = judge_faithfulness(window, contexts, settings)
    quality = online_quality(window.variant, window.ids, top, ratings, monitoring, window.models, faithfulness)
    rated = f"{quality.rated} rated, {quality.thumbs_down} down" if quality.rated else "no ratings"
    judged = ""
    if quality.faithfulness is not None:
        judged = f"; faithfulness {quality.faithfulness.mean:.3f} over {quality.faithfulness.n} judged answers"
        if quality.judge_missing:
            judged += f" ({quality.judge_missing} left unscored by the judge)"
    logger.info(
        "online quality of %s: %d questions, best-chunk similarity %.3f, %.0f%% without context (< %.2f); %s%s",
        quality.variant,
        quality.questions,
        quality.top_similarity.mean,
        100 * quality.no_context_share,
        quality.context_floor,
        rated,
        judged,
    )
    return quality


def judge_faithfulness(
    window: QueryWindow, contexts: list[list[str]], settings: OnlineEvalSettings
) -> list[float] | None:
    """The judge's faithfulness scores of a sample of the window's answers that had context (NaN
    where it gave none), or None: no judge configured, a sample of 0, or nothing to judge."""
    judge = judge_config(settings.evaluation)
    if judge is None or settings.monitoring.judge_sample == 0 or not window.answers:
        return None
    with_context = [a if contexts[i] else "" for i, a in enumerate(window.answers)]
    rows = judge_sample(window.ids, with_context, settings.monitoring.judge_sample)
    if not rows:
        return None
    scores, report = judged_scores(
        judge,
        [window.questions[i] for i in rows],
        [window.answers[i] for i in rows],
        [contexts[i] for i in rows],
        [""] * len(rows),
        settings.embeddings.model,
        metrics=("faithfulness",),
    )
    if report.reasons:
        get_run_logger().warning(
            "the judge left %d of %d answers of %s unscored: %s",
            report.missing.get("faithfulness", 0),
            len(rows),
            window.variant,
            "; ".join(report.examples[:2]),
        )
    return scores["faithfulness"]


@task(name="compare-online-quality")
def compare_online_quality(*, qualities: list[OnlineQuality], monitoring: MonitoringSettings) -> list[OnlineQuality]:
    """Each variant against production (``against_production``), as the ``online-quality`` table
    artifact; a variant rated significantly worse than production is logged as a warning."""
    logger = get_run_logger()
    qualities = against_production(qualities, monitoring)
    for q in qualities:
        if q.worse_than_production:
            logger.warning("online quality: %s", q.worse_than_production)
    create_table_artifact(
        key="online-quality",
        table=[
            {
                "variant": q.variant,
                "questions": q.questions,
                "best-chunk similarity": round(q.top_similarity.mean, 4),
                "interval": f"[{q.top_similarity.ci_low:.3f}, {q.top_similarity.ci_high:.3f}]",
                "without context": round(q.no_context_share, 3),
                "rated": q.rated,
                "thumbs down": q.thumbs_down,
                "faithfulness (judged)": (
                    f"{q.faithfulness.mean:.3f} of {q.faithfulness.n}"
                    + (f", {q.judge_missing} unscored" if q.judge_missing else "")
                    if q.faithfulness is not None
                    else ""
                ),
                "worse than production": q.worse_than_production or "",
            }
            for q in qualities
        ],
        description="Served questions, measured without labels (retrieval and users' ratings)",
    )
    return qualities


def _emit(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    emit_event(event=event, resource=resource, payload=payload)


@task(name="act-on-online-quality")
def act_on_online_quality(
    *, qualities: list[OnlineQuality], monitoring: MonitoringSettings, prompt_name: str, workspace: Workspace
) -> SwapOutcome | None:
    """Roll back the canary when its answers are rated significantly worse than production's
    (``canary_rated_worse``; ``monitoring.rollback_on_quality``): the manifest's traffic goes back to
    production, the registry's aliases move back, ``lockgate.canary.rolled_back`` names the reason.

    The manifest is replaced as the gateway replaces it on errors (``swap_manifest``): under the
    deploys' lock, only if it is still the one judged. Returns the swap's outcome (``busy`` while a
    deploy holds the lock: the next online evaluation tries again), or None when nothing was due.
    """
    path = workspace.serving.manifest
    if not monitoring.rollback_on_quality or not path.is_file():
        return None
    judged = load_manifest(path)
    reason = canary_rated_worse(qualities, judged)
    if reason is None:
        return None
    prompts = workspace.prompts(prompt_name)
    outcome = swap_manifest(
        path,
        judged,
        lambda current: roll_back_canary(current, workspace.registry, _emit, reason, prompts),
        f"canary rollback ({reason})",
        workspace.serving.folder,
    )
    logger = get_run_logger()
    if outcome == "swapped":
        logger.warning("canary rolled back: %s", reason)
    else:
        logger.warning("canary not rolled back yet (%s: a deploy holds or replaced the manifest): %s", outcome, reason)
    return outcome


@task(name="record-online")
def record_online(
    *, qualities: list[OnlineQuality], monitoring: MonitoringSettings, workspace: Workspace
) -> dict[str, float]:
    """Put the window's quality per variant on the dashboard, beside what Prometheus measured of the
    same traffic (p95 latency, tokens/s, error ratio, queue depth; ``monitoring.prometheus_url``).
    Prometheus not answering leaves the serving panels as they were, with a log line."""
    values: dict[str, float] = {}
    for q in qualities:
        values[f"{q.variant}_top_similarity"] = q.top_similarity.mean
        values[f"{q.variant}_no_context_share"] = q.no_context_share
        if q.negative_share is not None:
            values[f"{q.variant}_negative_share"] = q.negative_share
        if q.faithfulness is not None and q.faithfulness.n:
            values[f"{q.variant}_faithfulness"] = q.faithfulness.mean
    record_on_dashboard(workspace, "online-quality", values)
    try:
        serving = prometheus_values(monitoring.prometheus_url)
    except TransientError as exc:
        get_run_logger().info("serving panels not updated: %s", exc)
        return values
    record_on_dashboard(workspace, "serving", serving)
    return values | serving

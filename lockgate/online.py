"""Quality of served traffic without labels: how well retrieval found context for the questions
users asked, and what they said about the answers, per variant.

No reference answers exist for real traffic, so the online evaluation measures what needs none:
the similarity of each question's best retrieved chunk (low: the index has nothing on it), the
share of questions with no chunk above ``monitoring.context_floor``, and the feedback users sent
(``/v1/feedback`` names the completion, which the query log records), and, where a judge is
configured, the judged faithfulness of a sample of the logged answers to the context retrieved
for their questions (``judge_sample``). A canary is *significantly
worse* than production when its share of negative ratings is higher and the two shares'
difference has a confidence interval above zero, each side with at least ``min_rated`` ratings;
such a canary is rolled back (``canary_rated_worse``), as the gateway rolls back one that errs or
is slow.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

from lockgate.records import MetricSummary, OnlineQuality
from lockgate.settings import MonitoringSettings

if TYPE_CHECKING:
    from lockgate.serving.manifest import ServingManifest


def read_ratings(path: Path) -> dict[str, int]:
    """The latest rating (-1, 0 or 1) the gateway's feedback log holds for each completion id.

    A missing log is no feedback yet; a line that is not a rating row is skipped.
    """
    ratings: dict[str, int] = {}
    if not path.is_file():
        return ratings
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("id"), str) and row.get("rating") in (-1, 0, 1):
                ratings[row["id"]] = int(row["rating"])
    return ratings


def judge_sample(ids: Sequence[str], answers: Sequence[str], size: int) -> list[int]:
    """Which rows of a window the judge reads: at most ``size`` of those with an answer, in window
    order, drawn with a seed taken from the window's completion ids (the same window, the same sample)."""
    answered = [i for i, answer in enumerate(answers) if answer.strip()]
    if len(answered) <= size:
        return answered
    seed = int.from_bytes(hashlib.sha256("\n".join(ids).encode()).digest()[:8], "big")
    return sorted(random.Random(seed).sample(answered, size))


def online_quality(
    variant: str,
    ids: Sequence[str],
    top_similarity: Sequence[float],
    ratings: dict[str, int],
    settings: MonitoringSettings,
    models: Sequence[str] = (),
    faithfulness: Sequence[float] | None = None,
) -> OnlineQuality:
    """One variant's served window, measured.

    Args:
        ids: the completions of the window (the query log's ``id``; empty for rows written before
            the gateway logged it, whose feedback cannot be joined).
        top_similarity: per question, the similarity of its best retrieved chunk (NaN: no index).
        ratings: ``read_ratings`` of the feedback log.
        faithfulness: the judged sample's scores (NaN: the judge gave none); None: nothing was judged.
    """
    judged = [f for f in faithfulness or () if math.isfinite(f)]
    scores = [s for s in top_similarity if math.isfinite(s)]
    rated = [ratings[i] for i in ids if i in ratings]
    down, up = rated.count(-1), rated.count(1)
    return OnlineQuality(
        variant=variant,
        questions=len(top_similarity),
        models=tuple(models),
        top_similarity=MetricSummary.of(scores, settings.confidence, 1000, 0),
        no_context_share=(sum(s < settings.context_floor for s in scores) / len(scores)) if scores else math.nan,
        context_floor=settings.context_floor,
        rated=len(rated),
        thumbs_up=up,
        thumbs_down=down,
        negative_share=down / len(rated) if rated else None,
        faithfulness=MetricSummary.of(judged, settings.confidence, 1000, 0) if faithfulness else None,
        judge_missing=len(faithfulness or ()) - len(judged),
    )


def significantly_worse(
    candidate: OnlineQuality, production: OnlineQuality, settings: MonitoringSettings
) -> str | None:
    """Why ``candidate``'s answers are rated significantly worse than production's, or None.

    Compares the shares of negative ratings (a normal-approximation interval of their difference);
    with fewer than ``min_rated`` ratings on either side nothing is concluded.
    """
    if candidate.rated < settings.min_rated or production.rated < settings.min_rated:
        return None
    p1, n1 = candidate.thumbs_down / candidate.rated, candidate.rated
    p2, n2 = production.thumbs_down / production.rated, production.rated
    z = NormalDist().inv_cdf(1 - (1 - settings.confidence) / 2)
    low = (p1 - p2) - z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    if low <= 0:
        return None
    return (
        f"{candidate.variant}'s answers were rated down {p1:.0%} of {n1} times against {production.variant}'s "
        f"{p2:.0%} of {n2} (difference at least {low:+.0%} at {settings.confidence:.0%} confidence)"
    )


def against_production(qualities: Sequence[OnlineQuality], settings: MonitoringSettings) -> list[OnlineQuality]:
    """Each variant other than production, marked when its ratings are significantly worse."""
    production = next((q for q in qualities if q.variant == "production"), None)
    if production is None:
        return list(qualities)
    return [
        q
        if q is production
        else q.model_copy(update={"worse_than_production": significantly_worse(q, production, settings)})
        for q in qualities
    ]


def canary_rated_worse(qualities: Sequence[OnlineQuality], manifest: ServingManifest) -> str | None:
    """Why the manifest's canary is to be rolled back on the quality of what it served, or None.

    Only the canary that was measured is judged: every question of its window must have been
    answered by the model the manifest's canary serves now (a canary deployed since the window was
    read, or in its middle, is judged afresh on its own traffic).
    """
    canary = manifest.canary
    quality = next((q for q in qualities if q.variant == "canary"), None)
    if canary is None or quality is None or quality.worse_than_production is None:
        return None
    if set(quality.models) != {canary.model_digest}:
        return None
    return f"online quality: {quality.worse_than_production}"

"""Served traffic measured without labels: ratings joined to their questions, questions without
context, and when a canary's ratings are significantly worse than production's (it is then
rolled back, if it is still the canary that was measured)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lockgate.online import (
    against_production,
    canary_rated_worse,
    online_quality,
    read_ratings,
    significantly_worse,
)
from lockgate.records import OnlineQuality
from lockgate.serving import ServingManifest, Variant
from lockgate.settings import MonitoringSettings

SETTINGS = MonitoringSettings(context_floor=0.3, min_rated=20)


def test_the_latest_rating_of_each_answer_counts_and_other_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    rows = [
        {"id": "a", "rating": 1},
        {"id": "a", "rating": -1},  # changed their mind
        {"id": "b", "rating": 0},
        {"id": "c", "rating": 5},  # not a rating
        {"rating": 1},  # no id
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn\n")
    assert read_ratings(log) == {"a": -1, "b": 0}
    assert read_ratings(tmp_path / "none.jsonl") == {}


def test_a_window_is_measured_by_its_best_chunks_and_its_ratings() -> None:
    quality = online_quality(
        "canary", ["x", "y", "z", ""], [0.9, 0.1, 0.5, math.nan], {"x": 1, "y": -1, "q": -1}, SETTINGS, ["sha256:c"]
    )
    assert quality.questions == 4 and quality.top_similarity.n == 3, "NaN (no index) is not a score"
    assert quality.top_similarity.mean == pytest.approx(0.5) and quality.no_context_share == pytest.approx(1 / 3)
    assert (quality.rated, quality.thumbs_up, quality.thumbs_down, quality.negative_share) == (2, 1, 1, 0.5)


def rated(variant: str, down: int, of: int) -> OnlineQuality:
    ids = [f"{variant}{i}" for i in range(of)]
    ratings = {i: (-1 if k < down else 1) for k, i in enumerate(ids)}
    return online_quality(variant, ids, [0.8] * of, ratings, SETTINGS)


def test_a_canary_rated_down_far_more_often_is_named_and_a_close_one_is_not() -> None:
    production = rated("production", down=4, of=40)
    worse = rated("canary", down=20, of=40)
    close = rated("canary", down=7, of=40)
    few = rated("canary", down=10, of=10)
    reason = significantly_worse(worse, production, SETTINGS)
    assert reason and reason.startswith("canary's answers were rated down 50% of 40 times against production's 10%")
    assert significantly_worse(close, production, SETTINGS) is None
    assert significantly_worse(few, production, SETTINGS) is None, "10 ratings are fewer than min_rated"
    marked = against_production([production, worse], SETTINGS)
    assert marked[0].worse_than_production is None and marked[1].worse_than_production == reason


def manifest_with_canary(canary_digest: str = "sha256:canary") -> ServingManifest:
    def variant(name: str, digest: str) -> Variant:
        return Variant(
            name=name,  # type: ignore[arg-type]
            model_digest=digest,
            served_model=name,
            engine_url="http://127.0.0.1:9",
            model_path="m",
            prompt_version="v1",
            weight=0.5,
        )

    return ServingManifest(
        variants=(variant("production", "sha256:production"), variant("canary", canary_digest)), max_model_len=512
    )


def test_only_the_canary_that_was_measured_is_rolled_back_on_its_ratings() -> None:
    production = rated("production", down=4, of=40).model_copy(update={"models": ("sha256:production",)})
    worse = rated("canary", down=20, of=40).model_copy(update={"models": ("sha256:canary",)})
    judged = against_production([production, worse], SETTINGS)
    reason = canary_rated_worse(judged, manifest_with_canary())
    assert reason == f"online quality: {judged[1].worse_than_production}"
    assert canary_rated_worse(judged, manifest_with_canary("sha256:another")) is None, "deployed after the window"
    mixed = [judged[0], judged[1].model_copy(update={"models": ("sha256:canary", "sha256:older")})]
    assert canary_rated_worse(mixed, manifest_with_canary()) is None, "half its window was another canary's"
    assert canary_rated_worse(judged, manifest_with_canary().without_canary("gone")) is None
    fine = against_production(
        [production, rated("canary", 5, 40).model_copy(update={"models": ("sha256:canary",)})], SETTINGS
    )
    assert canary_rated_worse(fine, manifest_with_canary()) is None

"""The release's closing report for each way a run can end (pure: no server, no models)."""

from __future__ import annotations

import pytest

from flows.params import ReleaseSummary
from flows.pipeline import summary_markdown


def summary(**update: object) -> ReleaseSummary:
    base = ReleaseSummary(
        passed=False,
        action="kept",
        reasons=["rouge_l paired gain +0.000 [+0.000, +0.000]: lower end >= +0.000, but no gain at all"],
        production="sha256:prod",
        candidate="sha256:cand",
        dataset="sha256:data",
        metrics={"rouge_l": 0.5},
        baseline={"rouge_l": 0.5},
        timings_s={"gate": 0.1},
        outputs={"registry": "/r/state.json", "model_card": ""},
    )
    return base.model_copy(update=update)


@pytest.mark.parametrize(
    ("update", "verdict"),
    [
        ({}, "REJECTED, production unchanged"),
        ({"unchanged": True}, "NO CHANGE, production kept"),
        ({"passed": True, "action": "promoted"}, "PASSED, promoted to production"),
        ({"passed": True}, "PASSED (already in production)"),
        ({"action": "dry_run"}, "DRY RUN (would be rejected), nothing moved"),
    ],
)
def test_the_summary_opens_with_what_the_run_did(update: dict[str, object], verdict: str) -> None:
    text = summary_markdown(summary(**update))
    assert text.splitlines()[0] == f"# Release: {verdict}"
    assert "- registry: `/r/state.json`" in text and "model_card" not in text, "empty outputs are left out"

"""Prompt-only releases on the embedded defaults: the production model (trained once here by the
release flow) answers with a candidate prompt and with the production prompt; the gate decides.

Several minutes: one real release first (training included), then each prompt release evaluates
the eval set twice with the tiny model.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from flows.params import PromptMatrixParams, PromptReleaseParams, PromptReleaseSummary
from flows.prompt_release import prompt_matrix, prompt_release
from lockgate.errors import GateRejected
from lockgate.prompts import load_prompt
from lockgate.registry.prompts import PromptRegistry
from lockgate.signing import signature_path
from tests.conftest import ROOT
from tests.flows.conftest import copy_state
from tests.lockgate.registry.test_wandb_mirror import wandb_records

pytestmark = pytest.mark.slow

SHIPPED = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")
# A worse prompt: the context moved after the question, out of the format the model is fine-tuned on.
# (Dropping the context altogether costs the tiny demo model only 0.01-0.04 ROUGE-L, depending on the
# machine's training numerics: it has learned most facts of a document from the document's other
# questions. Too close to the margin for a test that must fail for the right reason only.)
CONTEXT_LAST = """\
name: grounded-qa
description: Answer with the context after the question.
variables: [question, context]
template: "Question: {{ question }}\\nContext: {{ context }}\\nAnswer:"
"""
# The same instructions, written another way: context always given, surrounding whitespace trimmed.
REWORDED = """\
name: grounded-qa
description: Answer from the retrieved context (reworded template).
variables: [question, context]
template: |-
  Context: {{ context | trim }}
  Question: {{ question | trim }}
  Answer:
"""


@pytest.fixture(scope="module")
def home(released: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder with a model and the shipped prompt in production: a copy of the session's
    shared release (tests/flows/conftest.py), since prompt releases change it."""
    return copy_state(released[0], tmp_path_factory.mktemp("prompt-release-home") / "home")


def candidate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    (folder / "grounded-qa.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("LOCKGATE_PROMPTS__DIR", str(folder))
    return folder


def matrix_tables(home: Path) -> list[tuple[Path, dict[str, object]]]:
    """The prompt_matrix tables logged to the W&B offline runs, read back with wandb's own record format
    (W&B may still be writing a run file after ``finish`` returns on a busy machine: wait, bounded)."""
    deadline = time.monotonic() + 60
    while True:
        logged = []
        for run in sorted((home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")):
            for record in wandb_records(run):
                if record.WhichOneof("record_type") == "history":
                    fields = {
                        item.nested_key[1]: json.loads(item.value_json)
                        for item in record.history.item
                        if list(item.nested_key)[:1] == ["prompt_matrix"] and len(item.nested_key) == 2
                    }
                    if fields:
                        logged.append((run.parent, fields))
        if logged or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


def test_the_model_release_evaluated_with_the_production_prompt_and_recorded_it(home: Path) -> None:
    from lockgate.registry import LocalRegistry

    prompts = PromptRegistry(home / "registry", "grounded-qa")
    assert prompts.production() == SHIPPED
    promoted = [m for m in LocalRegistry(home / "registry").history() if m.alias == "production"][-1]
    assert promoted.evidence["lineage"]["prompt_version"] == SHIPPED.version
    decided = Path(promoted.evidence["decision"]["path"])  # the gate's decision, kept and signed
    assert (decided / "decision.json").is_file() and signature_path(decided).is_file()


def test_a_worse_prompt_is_rejected_with_metric_and_slice_named_and_production_stays(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    candidate(tmp_path, monkeypatch, CONTEXT_LAST)
    with pytest.raises(GateRejected) as rejected:
        prompt_release(PromptReleaseParams(home=str(home)))
    summary = rejected.value.details
    assert summary.action == "kept" and not summary.passed  # type: ignore[attr-defined]
    reasons = " | ".join(summary.reasons)  # type: ignore[attr-defined]
    assert "rouge_l paired gain" in reasons, reasons
    assert "slice question_type=" in reasons and "veto" in reasons, "the worse slice is named"
    registry = PromptRegistry(home / "registry", "grounded-qa")
    assert registry.production() == SHIPPED, "production's prompt is unchanged"
    assert registry.spec("candidate").template.startswith("Question:"), "the rejected version is the candidate"


def test_a_neutral_rewording_passes_non_inferiority_and_is_promoted(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = candidate(tmp_path, monkeypatch, REWORDED)
    shutil.rmtree(home / "artifacts" / "references", ignore_errors=True)  # the model release kept them too
    summary = prompt_release(PromptReleaseParams(home=str(home)))
    assert summary.passed and summary.action == "promoted", summary.reasons
    kept = sorted((home / "artifacts" / "references").glob("*/reference.json"))
    assert len(kept) == 2, "the promoted prompt keeps the references of the questions it was judged on"
    reworded = load_prompt(folder / "grounded-qa.yaml")
    assert summary.production == reworded.version
    assert any("non_inferiority:rouge_l" in c for c in summary.checks)
    registry = PromptRegistry(home / "registry", "grounded-qa")
    assert registry.production() == reworded
    moved = [m for m in registry.history() if m.alias == "production"][-1]
    decided = Path(moved.evidence["decision"]["path"])
    assert moved.evidence["decision"]["digest"] == summary.decision and signature_path(decided).is_file()
    again = prompt_release(PromptReleaseParams(home=str(home)))
    assert again.action == "kept" and "already the production prompt" in again.reasons[0]


def test_the_matrix_crosses_prompt_versions_with_models_and_logs_a_wandb_table(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockgate.digest import digest_tree
    from lockgate.registry import LocalRegistry

    candidate(tmp_path, monkeypatch, CONTEXT_LAST)
    report = prompt_matrix(PromptMatrixParams(home=str(home), prompts=[SHIPPED.version, "file"]))
    # production (the champion, quantized) and the candidate: the same model after one release, so the
    # candidate adds only its merged, un-quantized twin, kept beside the quantized model by the quantize stage
    models = list(dict.fromkeys(cell.model for cell in report.cells))
    assert len(models) == 2 and len(report.cells) == 4, models
    assert models[0].startswith("production ") and models[1].endswith("merged (un-quantized)"), models
    production = LocalRegistry(home / "registry").get("production")
    assert production is not None
    cells = {cell.prompt: cell for cell in report.cells if cell.model == models[0]}
    assert len(cells) == 2 and report.reference.startswith(SHIPPED.version)
    assert {c.model_digest for c in cells.values()} == {production.digest}
    worse = cells[load_prompt(tmp_path / "prompts" / "grounded-qa.yaml").version].paired["rouge_l"]
    assert worse.ci_high < 0, "the worse prompt is significantly worse, paired on the same questions"
    assert cells[SHIPPED.version].paired["rouge_l"].mean == 0.0
    merged = {cell.prompt: cell for cell in report.cells if cell.model == models[1]}
    assert set(merged) == set(cells)
    twin = merged[SHIPPED.version]
    assert twin.model_digest == digest_tree(Path(production.path).parent / "merged") != production.digest
    assert twin.paired["rouge_l"].is_valid and twin.paired["rouge_l"].n == report.n_questions
    logged = matrix_tables(home)
    assert logged and logged[-1][1]["_type"] == "table-file", logged
    table = json.loads(next(logged[-1][0].rglob("prompt_matrix_*.table.json")).read_text())
    assert {row[0] for row in table["data"]} == set(cells) and "paired gain vs" in table["columns"][-1]
    assert {row[1] for row in table["data"]} == set(models)


# The shipped template with the question trimmed: renders as the shipped one for every eval question.
TRIMMED = """\
name: grounded-qa
description: The shipped template, the question trimmed.
variables: [question, context]
template: "{% if context %}Context: {{ context }}\\n{% endif %}Question: {{ question | trim }}\\nAnswer:"
"""


def test_an_llm_judge_scores_the_release_and_a_failing_one_fails_it_closed_with_the_reason(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judge is a real HTTP server on 127.0.0.1 (tests/lockgate/judge_server.py); dry runs move nothing."""
    from lockgate.metrics import JUDGED_METRICS
    from tests.lockgate.judge_server import judge_server

    candidate(tmp_path, monkeypatch, TRIMMED)
    monkeypatch.setenv("LOCKGATE_GATES__DECISION_MODE", "dry_run")
    production = PromptRegistry(home / "registry", "grounded-qa").production()

    def judged_release(base_url: str, timeout_s: float) -> tuple[PromptReleaseSummary, dict[str, dict[str, Any]]]:
        monkeypatch.setenv("LOCKGATE_EVALUATION__JUDGE_BASE_URL", base_url)
        monkeypatch.setenv("LOCKGATE_EVALUATION__JUDGE_TIMEOUT_S", str(timeout_s))
        summary = prompt_release(PromptReleaseParams(home=str(home)))
        assert summary.action == "dry_run" and summary.eval_rows, summary
        return summary, json.loads((Path(summary.eval_rows).parent / "judge.json").read_text())

    with judge_server("garbage") as server:
        garbage, report = judged_release(server.base_url, 20.0)
        asked = server.requests
        assert not garbage.passed and asked > 0
        reasons = " | ".join(garbage.reasons)
        assert "faithfulness missing for challenger" in reasons and "the judge answered unparseably" in reasons
        assert all(r["reasons"].keys() == {"unparseable"} for r in report.values()), report

        server.mode = "ok"  # the judge recovers: the same evaluation (same cache key) must ask it again
        judged, report = judged_release(server.base_url, 20.0)
        assert server.requests > asked, "the evaluation with missing judged scores was not reused from the cache"
        assert judged.passed, judged.reasons
        assert all(math.isfinite(judged.metrics.get(m, math.nan)) for m in JUDGED_METRICS), judged.metrics
        assert any(c.startswith("pass judged:faithfulness") for c in judged.checks), judged.checks
        assert sum(int(r["calls"]) for r in report.values()) == server.requests - asked
        assert all(float(r["latency_ms_p50"]) > 0 and not any(r["missing"].values()) for r in report.values())

    with judge_server("slow", delay_s=2.0) as slow:
        timed_out, report = judged_release(slow.base_url, 0.1)
        assert not timed_out.passed and "the judge timed out" in " | ".join(timed_out.reasons), timed_out.reasons
        assert all(r["reasons"].keys() == {"timeout"} for r in report.values()), report
    assert PromptRegistry(home / "registry", "grounded-qa").production() == production, "dry runs move nothing"

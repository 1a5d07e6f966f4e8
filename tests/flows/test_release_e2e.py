"""The whole release pipeline on the sample data, on the embedded defaults (several minutes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.params import ReleaseParams
from flows.pipeline import release
from lockgate.errors import GateRejected
from lockgate.policy import load_policy
from lockgate.registry import LocalRegistry
from tests.conftest import ROOT
from tests.flows.conftest import copy_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(released: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the shared release's state folder (its tests release again, roll back...)."""
    return copy_state(released[0], tmp_path_factory.mktemp("lockgate-home") / "home")


@pytest.fixture(scope="module")
def first_run(released: tuple[Path, object]):  # type: ignore[no-untyped-def]
    """The first release on a fresh state folder: the session's shared one (tests/flows/conftest.py)."""
    return released[1]


def test_fresh_run_promotes_a_model_that_beats_the_base(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert first_run.passed, first_run.reasons
    assert first_run.action == "promoted"
    assert first_run.metrics["rouge_l"] > first_run.baseline["rouge_l"] + 0.3
    production = LocalRegistry(home / "registry").get("production")
    assert production is not None and production.digest == first_run.candidate
    assert set(production.lineage) >= {"adapter", "base", "dataset", "training_config"}
    promoted = [m for m in LocalRegistry(home / "registry").history() if m.alias == "production"][-1]
    assert promoted.evidence["passed"] is True and promoted.evidence["gate"].startswith("sha256:")
    for stage in ("prep", "finetune", "quantize", "refresh", "evaluate", "drift", "gate", "promote"):
        assert stage in first_run.timings_s
    meta = json.loads((Path(first_run.outputs["adapter"]) / "lockgate-adapter.json").read_text())
    assert meta["wandb_run"].startswith("lockgate-finetune-"), "the training run was logged to W&B (offline)"


def test_the_promoted_model_keeps_its_drift_reference(released: tuple[Path, object]) -> None:
    """The promoted model's training and eval questions, embedded once, are kept with the embedder's identity."""
    from lockgate.digest import digest_json
    from lockgate.drift import training_questions

    home, summary = released
    dataset = Path(summary.outputs["dataset"])  # type: ignore[attr-defined]
    splits = [training_questions(dataset / name) for name in ("train.jsonl", "eval.jsonl")]
    kept = [json.loads(p.read_text()) for p in (home / "artifacts" / "references").glob("*/reference.json")]
    assert sorted((k["texts"], k["rows"]) for k in kept) == sorted((digest_json(q), len(q)) for q in splits), kept
    assert len({k["embedder"] for k in kept}) == 1 and kept[0]["embedder"].startswith("sha256:")
    assert all(k["embedder_name"] for k in kept)


def test_quantized_checkpoint_loads_and_generates(first_run) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = first_run.outputs["quantized"]
    config = json.loads((Path(path) / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    from lockgate.prompts import GROUNDED_QA

    prompt = GROUNDED_QA.render("Which team maintains the Relay?", "The Relay is maintained by the Fleet team.")
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "maintained by the" in answer, answer


def test_index_answers_queries(first_run) -> None:  # type: ignore[no-untyped-def]
    from lockgate.embeddings import SentenceTransformerEmbedder
    from lockgate.stores.milvus import MilvusStore

    uri, collection = first_run.outputs["index"].split("#")
    store = MilvusStore(uri, collection)
    store.ensure_collection(384)
    hits = store.search(SentenceTransformerEmbedder().encode(["Which port does the Sorter listen on?"]), 3)
    assert hits[0][0].doc == "sorter.md"


def test_reports_exist(first_run) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(x) for x in Path(first_run.outputs["eval_rows"]).read_text().splitlines()]
    assert len(rows) > 20 and {"challenger", "champion", "reference", "challenger_rouge_l"} <= set(rows[0])
    assert "Drift in embeddings" in Path(first_run.outputs["drift_html"]).read_text()


def test_rerun_with_unchanged_inputs_is_served_from_cache(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    adapters_before = sorted((home / "artifacts" / "adapters").iterdir())
    again = release(ReleaseParams(home=str(home)))
    assert {"finetune", "quantize", "evaluate", "drift"} <= set(again.cached)
    assert again.candidate == first_run.candidate and again.passed and again.action == "kept"
    assert sorted((home / "artifacts" / "adapters").iterdir()) == adapters_before


def test_decision_names_its_policy_lineage_and_paired_gain(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert first_run.policy == load_policy(ROOT / "policies" / "release.yaml").digest
    assert first_run.paired["rouge_l"].startswith("+") and "n=" in first_run.paired["rouge_l"]
    assert any(c.startswith("pass superiority:rouge_l") for c in first_run.checks)
    assert any(c.startswith("pass slice:question_type=") for c in first_run.checks), "slices were judged"
    promoted = [m for m in LocalRegistry(home / "registry").history() if m.alias == "production"][-1]
    lineage = promoted.evidence["lineage"]
    assert lineage["candidate"] == first_run.candidate and lineage["dataset"] == first_run.dataset
    assert promoted.evidence["policy"] == first_run.policy


def test_dry_run_decides_and_moves_nothing(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    state = (home / "registry" / "state.json").read_text()
    dry = release(ReleaseParams(home=str(home), decision_mode="dry_run"))
    assert dry.action == "dry_run" and dry.passed and "dry run" in dry.reasons[0]
    assert (home / "registry" / "state.json").read_text() == state


def test_a_moved_checkout_reruns_nothing(
    first_run, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    checkout = tmp_path / "elsewhere" / "lockgate"
    for name in ("examples", "profiles", "policies", "prompts", "requirements"):
        shutil.copytree(ROOT / name, checkout / name)
    (checkout / ".venv-trainer").symlink_to((ROOT / ".venv-trainer").resolve())
    moved = tmp_path / "elsewhere" / "state"
    shutil.copytree(home, moved, ignore=shutil.ignore_patterns("index"))  # the index is rebuilt, to the same digest
    monkeypatch.setenv("LOCKGATE_PROJECT_ROOT", str(checkout))
    again = release(ReleaseParams(home=str(moved)))
    assert {"finetune", "quantize", "evaluate", "drift"} <= set(again.cached)
    assert again.candidate == first_run.candidate and again.action == "kept"
    assert again.outputs["quantized"].startswith(str(moved)), "cached records point into the moved store"
    assert Path(again.outputs["eval_rows"]).is_file()


def test_sabotaged_candidate_is_rejected_and_production_untouched(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    registry = LocalRegistry(home / "registry")
    before = registry.snapshot().aliases["production"]
    with pytest.raises(GateRejected) as rejected:
        release(ReleaseParams(home=str(home), scenario="no-training"))
    sabotaged = rejected.value.details
    assert not sabotaged.passed and sabotaged.action == "kept"
    assert any("rouge_l" in r for r in sabotaged.reasons)
    assert any(r.startswith("rouge_l paired gain") for r in sabotaged.reasons), sabotaged.reasons
    assert registry.snapshot().aliases["production"] == before == first_run.candidate
    assert registry.snapshot().aliases["candidate"] == sabotaged.candidate != before


def test_rolled_back_model_is_not_promoted_again_by_a_rerun(first_run, home: Path) -> None:  # type: ignore[no-untyped-def]
    registry = LocalRegistry(home / "registry")
    registry.rollback("production", "bad answers in canary")
    assert registry.get("production") is None
    with pytest.raises(GateRejected) as rejected:
        release(ReleaseParams(home=str(home)))
    assert rejected.value.details.candidate == first_run.candidate
    assert any("rolled back: bad answers in canary" in r for r in rejected.value.details.reasons)
    assert registry.get("production") is None


def test_shuffled_labels_are_rejected_even_against_the_untrained_base(prefect_harness: None, tmp_path: Path) -> None:
    with pytest.raises(GateRejected) as rejected:
        release(ReleaseParams(home=str(tmp_path), scenario="shuffled-labels"))
    assert any("floor" in r for r in rejected.value.details.reasons)
    assert LocalRegistry(tmp_path / "registry").get("production") is None

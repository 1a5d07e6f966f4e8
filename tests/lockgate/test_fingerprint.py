"""Cache keys name everything a stage depends on, and no location."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from lockgate import fingerprint
from lockgate.fingerprint import canonical, environment_digest, weights_digest
from lockgate.records import BaseModelArtifact
from lockgate.settings import load_settings
from tests.conftest import ROOT
from tests.factories import dataset_snapshot


def stage_keys(
    root: str, trainer_env: str = "sha256:t", weights: str = "sha256:w", prompt: Any = None
) -> dict[str, str]:
    """The key of every cached stage, computed by the tasks' own cache policies."""
    from lockgate.evaluate import ModelUnderTest
    from lockgate.prompts import load_prompt
    from lockgate.records import IndexBuild
    from tasks.drift import DriftInputs, check_drift
    from tasks.evaluation import EvalInputs, evaluate_candidate
    from tasks.quantization import quantize_model
    from tasks.training import finetune_adapter

    s = load_settings()
    base = BaseModelArtifact(digest="sha256:base", name="b", path=f"{root}/base", hidden_size=128, parameters=1)
    workspace = Path(root)  # stands in for the Workspace: a key it entered would raise on this path
    index = IndexBuild(
        digest="sha256:index",
        uri=f"{root}/index/milvus.db",
        collection="docs",
        embedder="e",
        manifest_path=f"{root}/index/manifest.json",
        added=1,
        updated=0,
        deleted=0,
        unchanged=0,
        total=1,
    )
    inputs: dict[str, tuple[Any, dict[str, Any]]] = {
        "finetune": (
            finetune_adapter,
            {
                "snapshot": dataset_snapshot(root),
                "base": base,
                "training": s.training,
                "axolotl_bin": f"{root}/.venv-trainer/bin/axolotl",
                "trainer_env": trainer_env,
                "workspace": workspace,
                "shuffle_labels": False,
            },
        ),
        "quantize": (
            quantize_model,
            {"base": base, "snapshot": dataset_snapshot(root), "quantization": s.quantization, "workspace": workspace},
        ),
        "evaluate": (
            evaluate_candidate,
            {
                "inputs": EvalInputs(
                    candidate=ModelUnderTest(label="challenger", digest="sha256:cand", path=f"{root}/c"),
                    champion=ModelUnderTest(label="champion", digest="sha256:champ", path=f"{root}/m"),
                    snapshot=dataset_snapshot(root),
                    index=index,
                    embedder_weights=weights,
                    prompt=prompt or load_prompt(ROOT / "prompts" / "grounded-qa.yaml"),
                ),
                "evaluation": s.evaluation,
                "embeddings": s.embeddings,
                "vector_store": s.vector_store,
                "workspace": workspace,
            },
        ),
        "drift": (
            check_drift,
            {
                "inputs": DriftInputs(
                    reference_texts=["a"],
                    current_texts=["b"],
                    dataset_name="data",
                    dataset_digest="sha256:data",
                    embedder_weights=weights,
                ),
                "drift": s.drift,
                "embeddings": s.embeddings,
                "workspace": workspace,
            },
        ),
    }
    return {
        stage: task.cache_policy.compute_key(None, params, {})  # type: ignore[union-attr]
        for stage, (task, params) in inputs.items()
    }


@pytest.fixture
def library_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The library's source in a scratch folder, so a test can edit it."""
    copy = tmp_path / "src" / "lockgate"
    shutil.copytree(ROOT / "lockgate", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "LIBRARY_ROOT", copy)
    fingerprint.source_digest.cache_clear()
    yield copy
    fingerprint.source_digest.cache_clear()


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {stage for stage in before if before[stage] != after[stage]}


def test_moving_the_checkout_changes_no_key(library_copy: Path) -> None:
    assert stage_keys("/home/a/lockgate/.lockgate") == stage_keys("/srv/elsewhere/.lockgate")


def test_editing_the_prompt_template_reruns_the_stages_that_use_it(library_copy: Path) -> None:
    before = stage_keys("/x")
    prompts = library_copy / "prompts.py"
    prompts.write_text(prompts.read_text().replace("Answer:", "Reply:"))
    fingerprint.source_digest.cache_clear()
    assert changed(before, stage_keys("/x")) == {"finetune", "quantize", "evaluate"}


def test_a_new_prompt_version_reruns_only_evaluation() -> None:
    from lockgate.prompts import load_prompt

    spec = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")
    before = stage_keys("/x", prompt=spec)
    reworded = spec.model_copy(update={"template": spec.template.replace("Answer:", "Reply:")})
    assert changed(before, stage_keys("/x", prompt=reworded)) == {"evaluate"}
    described = spec.model_copy(update={"description": "the same prompt, described anew"})
    assert changed(before, stage_keys("/x", prompt=described)) == set(), "a description renders nothing"


def test_editing_one_module_reruns_only_its_stage(library_copy: Path) -> None:
    before = stage_keys("/x")
    drift = library_copy / "drift.py"
    drift.write_text(drift.read_text() + "\n# a change\n")
    fingerprint.source_digest.cache_clear()
    assert changed(before, stage_keys("/x")) == {"drift"}


def test_a_changed_lock_file_reruns_every_stage(library_copy: Path) -> None:
    shutil.copytree(ROOT / "requirements", library_copy.parent / "requirements")
    before = stage_keys("/x")
    lock = library_copy.parent / "requirements" / "app.lock"
    lock.write_text(lock.read_text() + "newpackage==1.0\n")
    assert changed(before, stage_keys("/x")) == set(before)


def test_swapping_embedder_weights_under_the_same_name_reruns_evaluate_and_drift(tmp_path: Path) -> None:
    model = tmp_path / "minilm"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    first = weights_digest(str(model))
    weights_digest.cache_clear()
    (model / "model.safetensors").write_bytes(b"weights v2")
    second = weights_digest(str(model))
    weights_digest.cache_clear()
    assert first != second
    assert changed(stage_keys("/x", weights=first), stage_keys("/x", weights=second)) == {"evaluate", "drift"}


def test_a_rebuilt_trainer_environment_behind_the_same_path_reruns_finetune(tmp_path: Path) -> None:
    def venv(where: Path, axolotl_version: str) -> Path:
        (where / "bin").mkdir(parents=True)
        (where / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
        site = where / "lib" / "python3.11" / "site-packages"
        (site / f"axolotl-{axolotl_version}.dist-info").mkdir(parents=True)
        (where / "bin" / "axolotl").write_text("#!/bin/sh\n")
        return where / "bin" / "axolotl"

    a = environment_digest(venv(tmp_path / "one", "0.19.0"))
    same_elsewhere = environment_digest(venv(tmp_path / "two", "0.19.0"))
    newer = environment_digest(venv(tmp_path / "three", "0.20.0"))
    assert a == same_elsewhere != newer
    assert changed(stage_keys("/x", trainer_env=a), stage_keys("/x", trainer_env=newer)) == {"finetune"}


def test_settings_naming_absolute_paths_still_give_location_free_keys(
    library_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = []
    for root in ("/srv/a", "/home/b"):
        monkeypatch.setenv("LOCKGATE_TRAINING__BASE_MODEL", f"{root}/models/llama")
        monkeypatch.setenv("LOCKGATE_EMBEDDINGS__MODEL", f"{root}/models/minilm")
        monkeypatch.setenv("LOCKGATE_VECTOR_STORE__URI", f"{root}/index/milvus.db")
        keys.append(stage_keys(root))
    assert keys[0] == keys[1], "where the base model, embedder and index live is not what they are"


def test_no_absolute_path_can_enter_a_key() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        canonical({"where": "/home/me/data"})
    assert canonical(dataset_snapshot("/anywhere")) == {"record": "DatasetSnapshot", "digest": "sha256:data"}


def test_task_results_are_stored_as_json_not_pickle() -> None:
    from tasks.drift import check_drift
    from tasks.evaluation import evaluate_candidate
    from tasks.quantization import quantize_model
    from tasks.training import finetune_adapter

    for task in (finetune_adapter, quantize_model, evaluate_candidate, check_drift):
        assert task.result_serializer == "json", task.name

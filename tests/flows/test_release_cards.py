"""Model cards and the license policy on the session's one real release (tests/flows/conftest.py: released):
the promoted model's card, read by Hugging Face's own loader, and a re-run under a policy that does not
allow the base model's license, rejected by the named check (the stages are served from cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.params import ReleaseParams
from flows.pipeline import release
from lockgate.digest import digest_bytes, short
from lockgate.errors import GateRejected
from lockgate.registry import LocalRegistry
from tests.conftest import ROOT
from tests.flows.conftest import copy_state

pytestmark = pytest.mark.slow


def test_the_promoted_models_card_loads_and_names_its_base_license_data_and_metrics(
    released: tuple[Path, Any],
) -> None:
    home, summary = released
    path = Path(summary.outputs["model_card"])
    assert path.is_file() and path.name == "README.md"
    assert not path.is_relative_to(summary.outputs["quantized"]), "the signed model folder never changes"

    data = ModelCard.load(path).data
    production = LocalRegistry(home / "registry").get("production")
    assert production is not None and production.digest == summary.candidate
    meta = data.get("lockgate")
    assert meta["model"] == summary.candidate
    assert data.license == "apache-2.0" and meta["base_model"]["digest"] == production.lineage["base"]
    assert data.base_model == meta["base_model"]["name"] and data.base_model
    assert data.datasets == ["quillstone-qa"] and meta["dataset"]["digest"] == summary.dataset
    assert "secrets_redacted" in meta["dataset"]
    rouge = next(r for r in data.eval_results if r.metric_type == "rouge_l")
    assert rouge.metric_value == round(summary.metrics["rouge_l"], 4) and "95% CI" in rouge.metric_name
    interval = meta["evaluation"]["metrics"]["rouge_l"]
    assert interval["ci_low"] <= interval["mean"] <= interval["ci_high"]
    assert meta["gate"]["decision"] == summary.decision and meta["gate"]["policy"] == summary.policy
    assert any(c["name"] == "license" and c["passed"] for c in meta["gate"]["checks"])
    assert meta["quantization"]["scheme"] == "W4A16"

    promoted = [m for m in LocalRegistry(home / "registry").history() if m.alias == "production"][-1]
    assert promoted.evidence["card"] == {"path": str(path), "digest": digest_bytes(path.read_bytes())}
    with get_client(sync_client=True) as client:
        shown = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["model-card"])),
            sort=ArtifactSort.CREATED_DESC,
        )
    # other tests on the session's server publish cards of their own: this release's names its model
    ours = [a for a in shown if a.description == f"Model card of {short(summary.candidate)}"]
    assert ours, "published as a Prefect artifact"
    assert "License: **apache-2.0**" in str(ours[0].data)


def test_a_release_whose_base_model_license_is_not_allowed_fails_the_license_check(
    released: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = copy_state(released[0], tmp_path / "home")
    shipped = (ROOT / "policies" / "release.yaml").read_text(encoding="utf-8")
    policy = tmp_path / "mit-only.yaml"
    policy.write_text(shipped.replace("allowed: [apache-2.0, mit,", "allowed: [mit,"), encoding="utf-8")
    assert policy.read_text(encoding="utf-8") != shipped
    monkeypatch.setenv("LOCKGATE_GATES__POLICY", str(policy))
    registry = LocalRegistry(home / "registry")
    before = registry.snapshot().aliases

    with pytest.raises(GateRejected) as rejected:
        release(ReleaseParams(home=str(home)))
    summary = rejected.value.details
    assert not summary.passed and summary.action == "kept"
    failures = [c for c in summary.checks if c.startswith("FAIL")]
    assert len(failures) == 1 and failures[0].startswith("FAIL license: "), summary.checks
    assert "licensed apache-2.0, which the policy does not allow" in failures[0]
    assert registry.snapshot().aliases["production"] == before["production"]

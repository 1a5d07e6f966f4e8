"""The prompt registry: the model registry's rules (CAS, revocation, rollback) for prompt versions,
a canary traffic weight for serving, and the W&B mirror (read back from the offline run files)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.prompts import PromptSpec, load_prompt
from lockgate.registry import RevokedModel
from lockgate.registry.prompts import PromptRegistry, StaleProduction, open_prompt_registry
from lockgate.settings import RegistrySettings
from tests.conftest import ROOT
from tests.lockgate.registry.test_wandb_mirror import wandb_records

BASE = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")


def variant(words: str) -> PromptSpec:
    return BASE.model_copy(update={"template": BASE.template.replace("Answer:", words)})


def state(registry: PromptRegistry) -> dict:  # type: ignore[type-arg]
    return json.loads((registry.root / "state.json").read_text())


def test_first_use_makes_the_configured_prompt_production_and_later_uses_keep_production(tmp_path: Path) -> None:
    registry = PromptRegistry(tmp_path, "grounded-qa")
    assert registry.serving(BASE) == BASE
    assert registry.serving(variant("Reply:")) == BASE, "an edited file is not served until it is released"
    assert registry.spec("production") == BASE and registry.spec(BASE.version) == BASE
    assert registry.spec(BASE.digest[:20]) == BASE
    with pytest.raises(ConfigError, match="no version match"):
        registry.spec("grounded-qa@ffff")


def test_release_is_compare_and_swap_on_production(tmp_path: Path) -> None:
    registry = PromptRegistry(tmp_path, "grounded-qa")
    registry.serving(BASE)
    better, other = variant("Reply:"), variant("Response:")
    assert registry.release(better, {"gate": "g1"}, True, BASE.digest) == ("promoted", BASE.digest)
    assert registry.production() == better
    with pytest.raises(StaleProduction, match="judged against"):
        registry.release(other, {}, True, BASE.digest)  # judged against a production that has moved on
    assert registry.production() == better
    assert registry.release(other, {}, False, better.digest) == ("kept", better.digest)
    assert registry.get("candidate").digest == other.digest  # type: ignore[union-attr]
    assert registry.production() == better, "a rejected prompt leaves production as it was"


def test_rollback_restores_production_and_revokes_the_prompt_it_leaves(tmp_path: Path) -> None:
    registry = PromptRegistry(tmp_path, "grounded-qa")
    registry.serving(BASE)
    bad = variant("Reply:")
    registry.release(bad, {}, True, BASE.digest)
    registry.rollback("production", "answers got worse")
    assert registry.production() == BASE
    with pytest.raises(RevokedModel, match="answers got worse"):
        registry.release(bad, {}, True, BASE.digest)


def test_a_canary_records_its_traffic_weight_for_serving(tmp_path: Path) -> None:
    registry = PromptRegistry(tmp_path, "grounded-qa")
    registry.serving(BASE)
    first, second = variant("Reply:"), variant("Response:")
    assert registry.release(first, {}, True, BASE.digest, to="canary", weight=0.1)[0] == "canary"
    assert state(registry)["traffic"] == {"canary": 0.1}
    assert state(registry)["aliases"] == {"production": BASE.digest, "candidate": first.digest, "canary": first.digest}
    registry.add(second)
    registry.point("canary", second.version, "manual", weight=0.25)
    assert state(registry)["traffic"] == {"canary": 0.25}
    registry.rollback("canary", "errors")
    assert state(registry)["traffic"] == {"canary": 0.1}, "rolling the canary back restores its weight too"
    registry.point("production", first.version, "canary was fine")
    assert state(registry)["traffic"] == {}, "a canary equal to production takes no share"
    with pytest.raises(ConfigError, match="traffic weight"):
        registry.release(second, {}, True, first.digest, to="canary", weight=None)


def logged_prompt_artifacts(home: Path, expected: int) -> list[tuple[str, str, str, list[str]]]:
    """(name, type, version, aliases) of every artifact the offline runs hold; W&B may still be writing
    a run file after ``finish`` returns on a busy machine, so wait (bounded) for ``expected`` of them."""
    deadline = time.monotonic() + 60
    while True:
        logged = []
        for run in sorted((home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")):
            for record in wandb_records(run):
                if record.WhichOneof("record_type") == "artifact":
                    meta = json.loads(record.artifact.metadata)
                    artifact = record.artifact
                    logged.append((artifact.name, artifact.type, meta["lineage"]["version"], sorted(artifact.aliases)))
        if len(logged) >= expected or time.monotonic() > deadline:
            return logged
        time.sleep(0.5)


def test_prompt_versions_and_aliases_are_mirrored_to_wandb(tmp_path: Path) -> None:
    registry = open_prompt_registry(RegistrySettings(backend="wandb"), tmp_path / "home" / "registry", "grounded-qa")
    registry.serving(BASE)
    better = variant("Reply:")
    registry.release(better, {}, True, BASE.digest)
    logged = logged_prompt_artifacts(tmp_path / "home", expected=2)
    assert {(name, kind) for name, kind, _, _ in logged} == {("lockgate-prompt-grounded-qa", "prompt")}
    by_version = {version: set(aliases) for _, _, version, aliases in logged}
    assert "production" in by_version[BASE.version], "the first version was production when it was mirrored"
    assert {"production", "candidate"} <= by_version[better.version]

"""Prompt versions are signed when added and served only from their verified copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.prompts import load_prompt
from lockgate.registry.prompts import PromptRegistry
from lockgate.signing import ArtifactSigning, TamperedError, signature_path
from tests.conftest import ROOT


def test_a_prompt_copy_edited_after_it_was_added_is_refused(tmp_path: Path, signing: ArtifactSigning) -> None:
    spec = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")
    registry = PromptRegistry(tmp_path / "registry", spec.name, signing=signing)
    version = registry.add(spec)
    copy = Path(version.path)
    assert signature_path(copy).is_file()
    registry.set_alias("production", spec.digest, "first")
    assert registry.production() == spec and registry.spec(spec.version) == spec

    data = json.loads(copy.read_text())
    data["template"] = data["template"].replace("Answer:", "Ignore the context. Answer:")
    copy.write_text(json.dumps(data))
    with pytest.raises(TamperedError, match=rf"prompt {spec.name}@\w+ refused: {copy.name} was changed"):
        registry.production()

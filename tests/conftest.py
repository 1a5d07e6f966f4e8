"""Fixtures shared by every test level."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.offline import apply_offline_defaults
from lockgate.store import LocalArtifactStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Nothing in the tests may reach beyond localhost.
apply_offline_defaults()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.live import postgres, server  # noqa: F401  (a live Prefect server on PostgreSQL, shared by the live tests)


@pytest.fixture(scope="session")
def released(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One real release of the sample data on a fresh state folder (training included, about a minute),
    shared by every test that needs a promoted model: the state folder and the release's summary.

    Nobody changes this folder: a test that releases, rolls back or promotes on top works on its own
    copy (``copy_state``), as a second machine reading the same state would.
    """
    from flows.params import ReleaseParams
    from flows.pipeline import release

    home = tmp_path_factory.mktemp("released") / "home"
    summary = release(ReleaseParams(home=str(home)))
    assert summary.action == "promoted", summary.reasons
    return home, summary


def copy_state(home: Path, dest: Path) -> Path:
    """A copy of a state folder to change freely; records in it still name the original's paths,
    which the stages relocate into the copy (as for a moved checkout)."""
    shutil.copytree(home, dest, symlinks=True)
    return dest

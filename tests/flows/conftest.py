from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.flows.demo import release, saved_summary


@pytest.fixture(scope="session")
def released_run(
    prefect_api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any, subprocess.CompletedProcess[str]]:
    """One real release of the sample data on a fresh state folder, run as `make demo` runs it
    (training included, about a minute), shared by every test that needs a promoted model or the
    demo's output: the state folder, the release's summary (kept beside its log) and what the
    command printed. Its runs and artifacts are on the suite's Prefect server.

    Nobody changes this folder: a test that releases, rolls back, promotes or deploys on top
    works on its own copy (``copy_state``), as a second machine reading the same state would.
    """
    home = tmp_path_factory.mktemp("released") / "home"
    done = release(home, api_url=prefect_api_url)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return home, saved_summary(home), done


@pytest.fixture(scope="session")
def released(released_run: tuple[Path, Any, subprocess.CompletedProcess[str]]) -> tuple[Path, Any]:
    """The shared release's state folder and summary (a promoted model)."""
    home, summary, _ = released_run
    assert summary.action == "promoted", summary.reasons
    return home, summary


def copy_state(home: Path, dest: Path) -> Path:
    """A copy of a state folder to change freely; records in it still name the original's paths,
    which the stages relocate into the copy (as for a moved checkout)."""
    shutil.copytree(home, dest, symlinks=True)
    return dest

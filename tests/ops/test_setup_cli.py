"""`make setup` on a fresh clone gives a working `lockgate` command that runs that clone's code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_lockgate_command_works_after_setup_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    assert run(["git", "clone", "--quiet", str(ROOT), str(clone)], tmp_path).returncode == 0
    # A profile only this clone has: its command must list it, the original checkout's must not.
    shutil.copy(clone / "profiles" / "embedded.yaml", clone / "profiles" / "clone-only.yaml")
    setup = run(["scripts/setup.sh"], clone)  # environments come from the shared cache: seconds
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]

    helped = run([str(clone / ".venv" / "bin" / "lockgate"), "--help"], tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: lockgate"), helped.stderr[-2000:]
    listed = run([str(clone / ".venv" / "bin" / "lockgate"), "settings", "--list"], tmp_path)
    assert listed.returncode == 0 and "clone-only" in listed.stdout.split(), listed.stdout + listed.stderr
    here = run([str(ROOT / ".venv" / "bin" / "lockgate"), "settings", "--list"], tmp_path)
    assert here.returncode == 0 and "clone-only" not in here.stdout.split(), here.stdout + here.stderr

"""`python -m flows refresh` as a user meets it: the build's numbers, or one line and exit 2."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT

BUILD = re.compile(r"added (\d+), updated (\d+), deleted (\d+), unchanged (\d+) \(total (\d+)\) in [\d.]+ s \(")


def run_cli(*args: str, api: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": api}  # the session's server
    return subprocess.run(
        [sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


def test_refresh_prints_the_build_and_refuses_a_wrong_corpus(prefect_api_url: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES / "corpus", corpus)
    first = run_cli("--home", str(tmp_path / "home"), "refresh", "--corpus", str(corpus), api=prefect_api_url)
    assert first.returncode == 0, first.stderr[-3000:]
    found = BUILD.search(first.stdout)
    assert found, first.stdout
    added, updated, deleted, unchanged, total = map(int, found.groups())
    assert added == total > 0 and (updated, deleted, unchanged) == (0, 0, 0)
    assert "Traceback" not in first.stdout + first.stderr
    # Quiet success: one line per finished stage, no library bars or chatter; the rest is in the log.
    terminal = first.stderr.strip().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d  ", line) for line in terminal), terminal
    assert sum("refresh-index: completed" in line for line in terminal) == 1, terminal
    log = Path(first.stdout.strip().splitlines()[-1].removeprefix("full log "))
    assert log.is_file() and "refresh plan for" in log.read_text(), "the full log keeps the details"

    wrong = tmp_path / "sub"
    wrong.mkdir()
    shutil.copy(next(corpus.glob("*.md")), wrong)
    refused = run_cli("--home", str(tmp_path / "home"), "refresh", "--corpus", str(wrong), api=prefect_api_url)
    assert refused.returncode == 2, refused.stderr[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: refresh refused: it would delete ") and f"of the {total} vectors" in last
    assert "Traceback" not in refused.stderr

    missing = run_cli(
        "--home", str(tmp_path / "home"), "refresh", "--corpus", str(tmp_path / "nope"), api=prefect_api_url
    )
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith(
        "error: corpus folder not found"
    )

"""The prep command as a user meets it: a card or one JSON object, exit 0 or 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


def test_prep_json_on_the_profile_sources(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "prep", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"snapshot_path", "train_path", "eval_path", "quarantine_path", "counts"} <= set(result)
    assert sum(result["counts"].values()) == result["n_input"] == 425
    assert result["counts"]["quarantined"] == 3 and Path(result["train_path"]).is_file()
    assert Path(result["snapshot_path"]).is_relative_to(tmp_path)


def test_prep_prints_the_card_for_given_files(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "prep", str(EXAMPLES / "data" / "qa.jsonl"))
    assert out.returncode == 0, out.stderr
    assert "input 420 = " in out.stdout and ": holds" in out.stdout and "snapshot: " in out.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("not json\n")
    for args in ([str(tmp_path / "bad.jsonl")], [str(tmp_path / "missing.csv")], [str(tmp_path / "x.xml")]):
        out = run_cli("--home", str(tmp_path), "prep", *args)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and out.stderr.strip().splitlines()[-1].startswith("error: ")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"instruction": "a", "input": "b", "output": "c"}\n{"messages": []}\n')
    out = run_cli("--home", str(tmp_path), "prep", str(mixed))
    assert out.returncode == 2 and "mixes record shapes" in out.stderr

"""The command line as a user meets it: help, bad config, bad data, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))  # a test may point it at the session's server
    return subprocess.run(
        [sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT
    )


def test_help_lists_commands_and_exit_codes() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for word in ("release", "status", "rollback", "settings", "Exit codes"):
        assert word in out.stdout
    rel = run_cli("release", "--help")
    assert "--scenario" in rel.stdout and "no-training" in rel.stdout


def test_bad_config_value_names_the_field_without_traceback(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "release", env={"LOCKGATE_TRAINING__LEARNING_RATE": "-1"})
    assert out.returncode == 2
    assert "training.learning_rate" in out.stderr and "Traceback" not in out.stderr


def test_settings_command_prints_resolved_profile() -> None:
    out = run_cli("settings")
    assert out.returncode == 0
    assert json.loads(out.stdout)["vector_store"]["backend"] == "milvus-lite"


def test_broken_data_file_ends_with_clear_message_naming_file_and_row(prefect_api_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"instruction": "ok?", "output": "fine answer"}\n{"instruction": \nnot json at all\n')
    env = {"LOCKGATE_DATA__SOURCES": json.dumps([str(bad)]), "PREFECT_API_URL": prefect_api_url}
    out = run_cli("--home", str(tmp_path / "home"), "release", env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "broken.jsonl:2 [row] invalid JSON" in last
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_status_on_empty_registry(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "status")
    assert out.returncode == 0 and "production" in out.stdout


def test_bad_argument_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "release", "--max-steps", "0")
    assert out.returncode == 2
    assert "max_steps" in out.stderr and "Traceback" not in out.stderr


def test_gate_explain_prints_the_policy_in_words() -> None:
    out = run_cli("gate", "explain")
    assert out.returncode == 0, out.stderr
    assert "paired-bootstrap interval" in out.stdout and "release.yaml" in out.stdout


def test_malformed_settings_from_the_environment_are_one_line_exit_2(tmp_path: Path) -> None:
    for name, value, field in [
        ("LOCKGATE_EVALUATION__SLICE_FIELDS", "[a, b", "LOCKGATE_EVALUATION__SLICE_FIELDS"),
        ("LOCKGATE_DRIFT__THRESHOLD", ".inf", "drift.threshold"),
        ("LOCKGATE_GATES__POLICY", str(tmp_path / "missing.yaml"), "gates.policy"),
    ]:
        out = run_cli("--home", str(tmp_path), "release", env={name: value})
        assert out.returncode == 2, out.stderr
        assert field in out.stderr and "Traceback" not in out.stderr + out.stdout
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr

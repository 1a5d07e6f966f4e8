"""``lockgate prompts``: list, show, diff, promote and rollback; a bad prompt file is one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.cli import EXIT_BAD_INPUT, main
from tests.conftest import ROOT


@pytest.fixture
def prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    shutil.copy(ROOT / "prompts" / "grounded-qa.yaml", folder)
    monkeypatch.setenv("LOCKGATE_PROMPTS__DIR", str(folder))
    monkeypatch.setenv("LOCKGATE_HOME", str(tmp_path / "home"))
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_promote_diff_canary_and_rollback(prompts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "prompts", "promote", "file")[0] == 0
    original = json.loads(run(capsys, "prompts", "show", "production", "--json")[1])
    path = prompts / "grounded-qa.yaml"
    path.write_text(path.read_text().replace("Answer:", "Reply:"))
    code, out, _ = run(capsys, "prompts", "diff")
    assert code == 0 and "-Answer:" in out and "+Reply:" in out and original["version"] in out
    assert run(capsys, "prompts", "promote", "file", "--to", "canary", "--weight", "0.2")[0] == 0
    listed = json.loads(run(capsys, "prompts", "list", "--json")[1])
    assert listed[0]["traffic"] == {"canary": 0.2} and listed[0]["aliases"]["production"] == original["version"]
    assert run(capsys, "prompts", "promote", "canary")[0] == 0
    assert json.loads(run(capsys, "prompts", "show", "--json")[1])["template"].endswith("Reply:")
    assert run(capsys, "prompts", "rollback", "--reason", "worse")[0] == 0
    assert json.loads(run(capsys, "prompts", "show", "--json")[1])["version"] == original["version"]


def test_a_canary_without_a_weight_and_an_unknown_version_are_bad_input(
    prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "prompts", "promote", "file")[0] == 0
    code, _, err = run(capsys, "prompts", "promote", "file", "--to", "canary")
    assert code == EXIT_BAD_INPUT and "weight" in err
    code, _, err = run(capsys, "prompts", "show", "grounded-qa@123456")
    assert code == EXIT_BAD_INPUT and "no version match" in err


def test_a_bad_prompt_file_is_one_line_and_exit_2(prompts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = prompts / "grounded-qa.yaml"
    path.write_text(path.read_text().replace("{{ question }}", "{{ question }} {{ persona }}"))
    code, out, err = run(capsys, "prompts", "show", "file")
    assert code == EXIT_BAD_INPUT and out == ""
    assert err.count("\n") == 1 and str(path) in err and "undeclared variable(s) ['persona']" in err, err
    assert "Traceback" not in err


def test_releasing_a_bad_prompt_file_stops_before_anything_runs(
    prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = prompts / "grounded-qa.yaml"
    path.write_text(path.read_text().replace("variables: [question, context]", "variables: [question]"))
    code, _, err = run(capsys, "prompts", "release")
    assert code == EXIT_BAD_INPUT and err.count("\n") == 1 and "undeclared variable(s) ['context']" in err, err

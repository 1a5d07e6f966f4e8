"""The serve commands: keys are printed once and stored hashed; no manifest is one clear line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from lockgate.serving import KeyStore


def test_serve_key_prints_the_key_once_and_stores_its_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "serve-key", "alice", "--tokens-per-minute", "500"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    stored = tmp_path / "serving" / "keys.json"
    assert key.startswith("lg-") and key not in stored.read_text()
    record = KeyStore.load(stored).lookup(key)
    assert record is not None and record.tokens_per_minute == 500


def test_serve_without_a_deployment_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no serving manifest" in err[0] and "Traceback" not in err[0]


def test_deploy_rejects_a_bad_canary_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "deploy", "--canary-weight", "0.9"]) == 2
    assert "canary_weight" in capsys.readouterr().err


def test_the_serving_environment_is_found_against_the_project_root_from_any_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockgate.settings import LockgateSettings

    project = tmp_path / "project"
    (project / ".venv-serving" / "bin").mkdir(parents=True)
    (project / ".venv-serving" / "bin" / "python").touch()
    monkeypatch.chdir(tmp_path)  # not the project: a relative path must not be read against this
    settings = LockgateSettings(project_root=str(project))
    assert settings.serving_settings().vllm_python == str(project / ".venv-serving" / "bin" / "python")
    absolute = LockgateSettings(project_root=str(project), serving={"vllm_python": "/opt/vllm/bin/python"})
    assert absolute.serving_settings().vllm_python == "/opt/vllm/bin/python"
    # ask says which file it looked for: the project's, not one under the current folder.
    monkeypatch.setenv("LOCKGATE_PROJECT_ROOT", str(tmp_path / "elsewhere"))
    assert main(["--home", str(tmp_path / "home"), "ask"]) == 0
    expected = tmp_path / "elsewhere" / ".venv-serving" / "bin" / "python"
    assert f"the serving environment ({expected}) is missing" in capsys.readouterr().out


def test_ask_without_the_serving_environment_says_so_in_one_line_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-serving-env" / "bin" / "python"
    monkeypatch.setenv("LOCKGATE_SERVING__VLLM_PYTHON", str(missing))
    assert main(["--home", str(tmp_path / "home"), "ask"]) == 0
    shown = capsys.readouterr()
    assert shown.err == ""
    assert shown.out.strip().splitlines() == [
        f"serving skipped: the serving environment ({missing}) is missing; `make setup` builds it (vLLM, about 3.4 GB)"
    ]
    assert not (tmp_path / "home").exists()  # nothing deployed, no key made, no Prefect started

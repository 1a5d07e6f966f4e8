from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.settings import list_profiles, load_settings


@pytest.mark.parametrize("profile", list_profiles())
def test_every_shipped_profile_loads(profile: str) -> None:
    settings = load_settings(profile)
    assert settings.profile == profile
    assert settings.resolve(settings.data.corpus_dir).is_dir()
    for source in settings.data.sources:
        assert settings.resolve(source).is_file(), source


def test_every_problem_is_reported_at_once_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "training:\n  max_steps: 0\n  lora_r: -1\nquantization:\n  scheme: W3A3\nbase:\n  hidden_size: 100\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(profile_file=bad)
    text = str(err.value)
    for field in ("training.max_steps", "training.lora_r", "quantization.scheme", "base.hidden_size"):
        assert field in text
    assert str(bad) in text


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("trainng:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match="trainng"):
        load_settings(profile_file=bad)


def test_unknown_gate_metric_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown metrics"):
        load_settings(overrides={"gates": {"primary_metric": "accuracy"}})


def test_env_overrides_profile_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_TRAINING__MAX_STEPS", "17")
    assert load_settings().training.max_steps == 17
    assert load_settings(overrides={"training": {"max_steps": 5}}).training.max_steps == 5


def test_missing_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="embedded"):
        load_settings("does-not-exist")


def test_environment_typos_are_reported_and_foreign_variables_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_ENVS", "/somewhere")  # a script's variable, not a setting
    monkeypatch.setenv("LOCKGATE_PROJECT_ROOT", "/opt/lockgate")
    assert load_settings().project_root == "/opt/lockgate"
    monkeypatch.setenv("LOCKGATE_TRAINNG__MAX_STEPS", "3")
    with pytest.raises(ConfigError, match="LOCKGATE_TRAINNG__MAX_STEPS names no setting"):
        load_settings()

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


def test_gate_rules_live_in_the_policy_file_not_the_settings() -> None:
    with pytest.raises(ConfigError, match=r"gates\.primary_metric: Extra inputs"):
        load_settings(overrides={"gates": {"primary_metric": "accuracy"}})
    assert load_settings().policy_path.name == "release.yaml"


@pytest.mark.parametrize("value", [".inf", "inf", "-Infinity", "nan", "1e999"])
def test_infinite_or_nan_thresholds_are_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOCKGATE_DRIFT__THRESHOLD", value)
    with pytest.raises(ConfigError, match=r"drift\.threshold: Input should be a (finite|valid) number") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_infinite_values_in_a_profile_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("quantization:\n  max_loss_increase: .inf\nevaluation:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"quantization\.max_loss_increase: Input should be a finite number"):
        load_settings(profile_file=bad)


def test_leading_zero_is_decimal_never_octal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCKGATE_TRAINING__MAX_STEPS", "0300")
    assert load_settings().training.max_steps == 300
    monkeypatch.delenv("LOCKGATE_TRAINING__MAX_STEPS")
    profile = tmp_path / "p.yaml"
    profile.write_text("training:\n  max_steps: 0300\n  save_steps: 010\n")
    loaded = load_settings(profile_file=profile)
    assert (loaded.training.max_steps, loaded.training.save_steps) == (300, 10)


def test_yaml_1_1_surprises_do_not_apply(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("data:\n  name: no\n")  # YAML 1.1 would make this False
    assert load_settings(profile_file=profile).data.name == "no"


def test_malformed_mapping_in_the_environment_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_EVALUATION__SLICE_FIELDS", "[question_type, source_doc")
    with pytest.raises(ConfigError, match="LOCKGATE_EVALUATION__SLICE_FIELDS: not a valid mapping or list") as err:
        load_settings()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("LOCKGATE_EVALUATION__SLICE_FIELDS", '{"a": 1}')
    with pytest.raises(ConfigError, match=r"evaluation\.slice_fields"):
        load_settings()
    monkeypatch.setenv("LOCKGATE_EVALUATION__SLICE_FIELDS", "[question_type, source_doc]")
    assert load_settings().evaluation.slice_fields == ["question_type", "source_doc"]


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


def test_url_sources_pass_through_and_paths_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_DATA__SOURCES", '["s3://bucket/qa.jsonl", "examples/data/qa.jsonl"]')
    settings = load_settings()
    assert settings.sources == ["s3://bucket/qa.jsonl", str(settings.resolve("examples/data/qa.jsonl"))]

"""The flows that also run alone (their own deployments), run as flows on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.params import FinetuneParams, StageParams

pytestmark = pytest.mark.slow


def test_drift_flow_reports_on_this_dataset(prefect_harness: None, tmp_path: Path) -> None:
    from flows.drift import drift

    report = drift(StageParams(home=str(tmp_path)))
    assert report.dataset_digest and report.dataset_digest.startswith("sha256:")
    assert not report.drifted, "the current questions come from the same data as the reference"
    assert report.html_path and Path(report.html_path).is_file()
    assert Path(report.html_path).is_relative_to(tmp_path / "artifacts" / "drift")


def test_finetune_flow_trains_an_adapter(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.finetune import finetune

    monkeypatch.setenv("LOCKGATE_TRAINING__MAX_STEPS", "4")
    monkeypatch.setenv("LOCKGATE_TRAINING__SAVE_STEPS", "2")
    adapter = finetune(FinetuneParams(home=str(tmp_path)))
    assert adapter.steps == 4
    assert (Path(adapter.path) / "adapter_model.safetensors").is_file()

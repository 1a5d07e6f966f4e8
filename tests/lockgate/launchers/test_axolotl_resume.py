"""Real Axolotl on CPU: a run killed after a checkpoint resumes from it (about 40 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lockgate.artifacts import LocalArtifactStore
from lockgate.basemodel import ensure_base_model
from lockgate.finetune import (
    OFFLINE_ENV,
    LocalAxolotlLauncher,
    latest_checkpoint,
    render_axolotl_config,
    write_training_data,
)
from lockgate.prep import snapshot_dataset
from lockgate.settings import BaseModelSettings, DataSettings, TrainingSettings
from tests.conftest import EXAMPLES, ROOT, needs
from tests.factories import adapter_eval_loss

AXOLOTL = ROOT / ".venv-trainer" / "bin" / "axolotl"
# What "resumes to the same result" means on CPU (README, "Fine-tuning on workers that may vanish").
# Resuming on CPU is not bit for bit: the resumed run sees the batches in another order, so its
# adapter weights differ (0.7 relative L2 on this random-init tiny model) while the loss it
# reaches does not: measured 1.8% apart. The bound leaves room for that, not for a lost run.
RESUME_LOSS_TOLERANCE = 0.05  # relative, eval loss (mean answer cross-entropy on the eval rows)
pytestmark = [pytest.mark.slow, needs(AXOLOTL.exists(), "the trainer environment", "run `make setup`")]


def test_killed_training_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    snapshot = snapshot_dataset([EXAMPLES / "data" / "qa.jsonl"], DataSettings(), store)
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [EXAMPLES / "data" / "qa.jsonl"], store)
    out = tmp_path / "out"
    out.mkdir()
    cfg = render_axolotl_config(
        # Without W&B: a killed trainer's W&B service can hold the run id for a while, and this
        # test is about resuming the training itself.
        TrainingSettings(max_steps=100, save_steps=50, wandb_project=None),
        base,
        write_training_data(snapshot, tmp_path / "train.jsonl"),
        out,
    )
    config = tmp_path / "axolotl.yaml"
    config.write_text(yaml.safe_dump(cfg))

    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PYTHONPATH", None)
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [str(AXOLOTL), "train", str(config), "--launcher", "python"],
            cwd=out,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while latest_checkpoint(out) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # a spot node going away: the trainer and its children
        first.wait()
    interrupted_at = latest_checkpoint(out)
    assert interrupted_at is not None and interrupted_at.name == "checkpoint-50", (tmp_path / "first.log").read_text()
    assert not (out / "checkpoint-100").exists(), "the first run must not have finished"

    run = LocalAxolotlLauncher(AXOLOTL).train(config, out, timeout_s=600)
    assert run.resumed_from == str(interrupted_at)
    assert run.steps == 100
    assert "resume from checkpoint at" in (out / "axolotl.log").read_text()

    # The resumed run must end where an uninterrupted run with the same seed ends.
    straight = tmp_path / "straight"
    straight.mkdir()
    cfg_straight = {**cfg, "output_dir": str(straight), "dataset_prepared_path": str(straight / "prepared")}
    straight_config = tmp_path / "straight.yaml"
    straight_config.write_text(yaml.safe_dump(cfg_straight))
    uninterrupted = LocalAxolotlLauncher(AXOLOTL).train(straight_config, straight, timeout_s=600)
    assert uninterrupted.steps == 100
    resumed_loss = adapter_eval_loss(base.path, out, snapshot.eval_path)
    straight_loss = adapter_eval_loss(base.path, straight, snapshot.eval_path)
    assert abs(resumed_loss - straight_loss) <= RESUME_LOSS_TOLERANCE * straight_loss, (
        f"eval loss: resumed {resumed_loss} vs uninterrupted {straight_loss}"
    )

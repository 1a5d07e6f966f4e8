from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lockgate.errors import ConfigError, StageError, TransientError
from lockgate.finetune import (
    LocalAxolotlLauncher,
    latest_checkpoint,
    render_axolotl_config,
    training_config_digest,
    write_training_data,
)
from lockgate.records import BaseModelArtifact, DatasetSnapshot
from lockgate.settings import TrainingSettings
from tests.conftest import write_jsonl

BASE = BaseModelArtifact(
    digest="sha256:b", name="builtin:tiny-llama", path="/models/tiny", hidden_size=128, parameters=1
)


def test_cpu_config_switches_off_cuda_only_kernels(tmp_path: Path) -> None:
    cfg = render_axolotl_config(TrainingSettings(max_steps=7, lora_r=4), BASE, tmp_path / "t.jsonl", tmp_path / "o")
    assert cfg["lora_mlp_kernel"] is False and cfg["lora_qkv_kernel"] is False and cfg["lora_o_kernel"] is False
    assert cfg["bf16"] is False and cfg["fp16"] is False
    assert cfg["max_steps"] == 7 and cfg["lora_r"] == 4 and cfg["adapter"] == "lora"
    assert cfg["auto_resume_from_checkpoints"] is True
    dataset = cfg["datasets"][0]
    assert dataset["type"]["field_input"] == "context" and "{instruction}" in dataset["type"]["format"]


def test_config_digest_ignores_paths_but_not_knobs(tmp_path: Path) -> None:
    a = render_axolotl_config(TrainingSettings(), BASE, tmp_path / "a.jsonl", tmp_path / "a")
    b = render_axolotl_config(TrainingSettings(), BASE, tmp_path / "b.jsonl", tmp_path / "b")
    c = render_axolotl_config(TrainingSettings(learning_rate=1e-4), BASE, tmp_path / "a.jsonl", tmp_path / "a")
    assert training_config_digest(a) == training_config_digest(b) != training_config_digest(c)


def test_shuffled_labels_keep_questions_and_answers_but_break_pairs(tmp_path: Path) -> None:
    rows = [json.dumps({"instruction": f"q{i}", "output": f"a{i}", "context": "c"}) for i in range(50)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    snap = DatasetSnapshot(
        digest="sha256:d",
        name="n",
        path=str(tmp_path),
        train_path=str(train),
        eval_path="",
        quarantine_path="",
        card_path="",
        n_train=50,
        n_eval=0,
        n_quarantined=0,
        n_duplicates=0,
        n_redacted=0,
        source_digests={},
    )
    out = [json.loads(x) for x in write_training_data(snap, tmp_path / "o.jsonl", True).read_text().splitlines()]
    assert sorted(r["output"] for r in out) == sorted(f"a{i}" for i in range(50))
    assert sum(r["output"] == "a" + r["instruction"][1:] for r in out) < 10


def fake_axolotl(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "axolotl"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_missing_trainer_environment_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="make setup"):
        LocalAxolotlLauncher(tmp_path / "nope").train(tmp_path / "c.yaml", tmp_path, 60)


def test_crash_is_reported_with_the_error_line_and_log(tmp_path: Path) -> None:
    launcher = LocalAxolotlLauncher(fake_axolotl(tmp_path, 'echo "ValueError: bad lora_r"; exit 1\n'))
    with pytest.raises(StageError, match=r"exit 1.*ValueError: bad lora_r.*axolotl.log"):
        launcher.train(tmp_path / "c.yaml", tmp_path, 60)
    assert "bad lora_r" in (tmp_path / "axolotl.log").read_text()


def test_killed_trainer_is_transient_so_it_is_retried(tmp_path: Path) -> None:
    launcher = LocalAxolotlLauncher(fake_axolotl(tmp_path, "kill -9 $$\n"))
    with pytest.raises(TransientError, match="preempted"):
        launcher.train(tmp_path / "c.yaml", tmp_path, 60)


def test_success_reads_steps_and_loss_and_reports_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": []}))
    body = (
        'mkdir -p checkpoint-10 && echo \'{"global_step": 10, "log_history": [{"loss": 2.5}, {"loss": 1.25}]}\''
        " > checkpoint-10/trainer_state.json\n"
        "touch adapter_model.safetensors adapter_config.json\n"
        "echo \"{'loss': '1.25', 'epoch': '2.0'}\"\n"
    )
    run = LocalAxolotlLauncher(fake_axolotl(tmp_path, body)).train(tmp_path / "c.yaml", out, 60)
    assert run.steps == 10 and run.train_loss == 1.25
    assert run.resumed_from is not None and run.resumed_from.endswith("checkpoint-5")
    assert latest_checkpoint(out) == out / "checkpoint-10"


def test_unfinished_checkpoint_is_not_a_resume_point(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_silent_hung_trainer_is_killed_at_the_timeout(tmp_path: Path) -> None:
    launcher = LocalAxolotlLauncher(fake_axolotl(tmp_path, "sleep 30\n"))
    with pytest.raises(TransientError, match="timeout_s=1"):
        launcher.train(tmp_path / "c.yaml", tmp_path, timeout_s=1)


def test_hub_base_model_is_pinned_to_its_revision(tmp_path: Path) -> None:
    hub = BASE.model_copy(update={"name": "org/model", "path": "org/model", "revision": "abc123"})
    cfg = render_axolotl_config(TrainingSettings(), hub, tmp_path / "t.jsonl", tmp_path / "o")
    assert cfg["base_model"] == "org/model" and cfg["revision_of_model"] == "abc123"
    assert "lora_modules_to_save" not in cfg, "a real base needs no trainable embeddings"
    assert "revision_of_model" not in render_axolotl_config(TrainingSettings(), BASE, tmp_path / "t", tmp_path / "o")

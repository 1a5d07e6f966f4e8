"""The finetune task under Prefect: a preempted trainer is retried and resumes from its checkpoint."""

from __future__ import annotations

import stat
from pathlib import Path

from lockgate.basemodel import ensure_base_model
from lockgate.fingerprint import trainer_environment_digest
from lockgate.prep import snapshot_dataset
from lockgate.settings import BaseModelSettings, DataSettings, TrainingSettings
from lockgate.store import LocalArtifactStore
from tests.conftest import EXAMPLES

# First call: writes checkpoint-5, then dies as a preempted spot node would (SIGKILL).
# Second call (the retry): finishes from there and writes the adapter.
PREEMPTED_ONCE = """#!/usr/bin/env bash
if [ ! -f attempt ]; then
  touch attempt
  mkdir -p checkpoint-5 && echo '{"global_step": 5, "log_history": [{"loss": 3.0}]}' > checkpoint-5/trainer_state.json
  kill -9 $$
fi
mkdir -p checkpoint-10 && echo '{"global_step": 10, "log_history": [{"loss": 1.5}]}' > checkpoint-10/trainer_state.json
printf 'weights' > adapter_model.safetensors && echo '{}' > adapter_config.json
"""


def test_preempted_training_is_retried_and_resumes(prefect_harness: None, tmp_path: Path) -> None:
    from tasks.training import finetune_adapter

    store = LocalArtifactStore(tmp_path / "artifacts")
    snapshot = snapshot_dataset([EXAMPLES / "data" / "qa.jsonl"], DataSettings(), store)
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [EXAMPLES / "data" / "qa.jsonl"], store)
    trainer = tmp_path / "axolotl"
    trainer.write_text(PREEMPTED_ONCE)
    trainer.chmod(trainer.stat().st_mode | stat.S_IEXEC)

    state = finetune_adapter(
        snapshot,
        base,
        TrainingSettings(max_steps=10),
        str(trainer),
        str(store.root),
        trainer_environment_digest(trainer),
        return_state=True,
    )
    assert state.is_completed(), state
    adapter = state.result()
    assert adapter.steps == 10 and adapter.train_loss == 1.5
    assert adapter.resumed_from is not None and adapter.resumed_from.endswith("checkpoint-5")
    assert adapter.parents == (snapshot.digest, base.digest)
    assert (Path(adapter.path) / "adapter_model.safetensors").read_text() == "weights"

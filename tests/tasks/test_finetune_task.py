"""The finetune task under Prefect: a preempted trainer is retried and resumes from its checkpoint."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from lockgate.basemodel import ensure_base_model
from lockgate.fingerprint import environment_digest
from lockgate.prep import snapshot_dataset
from lockgate.settings import BaseModelSettings, DataSettings, TrainingSettings, load_settings
from lockgate.workspace import Workspace
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

    workspace = Workspace.open(load_settings(overrides={"home": str(tmp_path)}))
    store = workspace.artifacts
    snapshot = snapshot_dataset([EXAMPLES / "data" / "qa.jsonl"], DataSettings(), store)
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [EXAMPLES / "data" / "qa.jsonl"], store)
    trainer = tmp_path / "axolotl"
    trainer.write_text(PREEMPTED_ONCE)
    trainer.chmod(trainer.stat().st_mode | stat.S_IEXEC)

    state = finetune_adapter.with_options(refresh_cache=True)(  # the test is the training, not the cache
        snapshot=snapshot,
        base=base,
        training=TrainingSettings(max_steps=10),
        axolotl_bin=str(trainer),
        trainer_env=environment_digest(trainer),
        workspace=workspace,
        return_state=True,
    )
    assert state.is_completed(), state
    adapter = state.result()
    assert adapter.steps == 10 and adapter.train_loss == 1.5
    assert adapter.resumed_from is not None and adapter.resumed_from.endswith("checkpoint-5")
    assert adapter.parents == (snapshot.digest, base.digest)
    assert (Path(adapter.path) / "adapter_model.safetensors").read_text() == "weights"
    assert adapter.preemptions == 1, "the adapter says it survived one preemption"
    stored = sorted(p.name for p in (store.root / "checkpoints").glob("*/checkpoint-*") if p.is_dir())
    assert stored == ["checkpoint-10", "checkpoint-5"], "checkpoints left the worker as they appeared"


# Records start and end times, then succeeds; slow enough for the runs to overlap if allowed to.
TIMED = """#!/usr/bin/env bash
echo "start $(date +%s.%N) $TEAM_TAG" >> "$TIMES"
sleep 3
mkdir -p checkpoint-1 && echo '{"global_step": 1, "log_history": [{"loss": 1.0}]}' > checkpoint-1/trainer_state.json
printf 'weights' > adapter_model.safetensors && echo '{}' > adapter_config.json
echo "end $(date +%s.%N) $TEAM_TAG" >> "$TIMES"
"""


def test_gpu_quota_serialises_a_team_and_leaves_others_alone(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from tasks.training import finetune_adapter

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-team-a", limit=1))
    workspace = Workspace.open(load_settings(overrides={"home": str(tmp_path)}))
    store = workspace.artifacts
    snapshot = snapshot_dataset([EXAMPLES / "data" / "qa.jsonl"], DataSettings(), store)
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [EXAMPLES / "data" / "qa.jsonl"], store)
    times = tmp_path / "times.log"
    monkeypatch.setenv("TIMES", str(times))

    def train(team: str, tag: str, seed: int) -> None:
        trainer = tmp_path / f"axolotl-{tag}"
        trainer.write_text(TIMED.replace("$TEAM_TAG", tag))
        trainer.chmod(0o755)
        settings = TrainingSettings(max_steps=1, save_steps=1, team=team, seed=seed)
        fresh = finetune_adapter.with_options(refresh_cache=True)
        fresh(
            snapshot=snapshot,
            base=base,
            training=settings,
            axolotl_bin=str(trainer),
            trainer_env=f"sha256:{tag}",
            workspace=workspace,
        )

    teams = [("team-a", "a1", 1), ("team-a", "a2", 2), ("team-b", "b1", 3)]
    runs = [threading.Thread(target=train, args=args, daemon=True) for args in teams]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    assert not [r for r in runs if r.is_alive()], "a fine-tune still waits for its GPU slot after 120 s"
    spans: dict[str, list[float]] = {}
    for line in times.read_text().splitlines():
        kind, at, tag = line.split()
        spans.setdefault(tag, [0.0, 0.0])[kind == "end"] = float(at)
    (a1_start, a1_end), (a2_start, a2_end) = spans["a1"], spans["a2"]
    assert a1_end <= a2_start or a2_end <= a1_start, f"team A's two fine-tunes overlapped on one GPU: {spans}"
    b_start = spans["b1"][0]
    first_a_end = min(a1_end, a2_end)
    assert b_start < first_a_end, f"team B waited for team A's quota: {spans}"


FINISHES = """#!/usr/bin/env bash
mkdir -p checkpoint-2 && echo '{"global_step": 2, "log_history": [{"loss": 1.0}]}' > checkpoint-2/trainer_state.json
printf 'weights' > adapter_model.safetensors && echo '{}' > adapter_config.json
"""


def test_rows_too_long_for_training_are_counted_on_the_dataset_card(prefect_harness: None, tmp_path: Path) -> None:
    import json
    import random

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from tasks.training import finetune_adapter

    data = tmp_path / "qa.jsonl"
    digits = " ".join(random.Random(0).choice("0123456789") for _ in range(950))  # under prep's 2000 characters
    long_row = {"instruction": "Tell me every digit?", "context": "", "output": digits}
    data.write_text((EXAMPLES / "data" / "qa.jsonl").read_text() + json.dumps(long_row) + "\n")
    workspace = Workspace.open(load_settings(overrides={"home": str(tmp_path)}))
    store = workspace.artifacts
    snapshot = snapshot_dataset([data], DataSettings(name="long-rows", eval_fraction=0.01), store)
    assert digits in Path(snapshot.train_path).read_text(), "the long row is in the train split"
    base = ensure_base_model("builtin:tiny-llama", BaseModelSettings(), [data], store)
    trainer = tmp_path / "axolotl"
    trainer.write_text(FINISHES)
    trainer.chmod(0o755)
    adapter = finetune_adapter.with_options(refresh_cache=True)(
        snapshot=snapshot,
        base=base,
        training=TrainingSettings(max_steps=2),
        axolotl_bin=str(trainer),
        trainer_env="sha256:fake",
        workspace=workspace,
    )
    assert (adapter.rows_trained, adapter.rows_too_long) == (snapshot.n_train - 1, 1)
    with get_client(sync_client=True) as client:
        cards = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dataset-long-rows"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    card = str(cards[0].data)
    assert "length filter" in card and "sequence_len=512" in card, card
    assert f"| trained on | {snapshot.n_train - 1} |" in card and "| too long | 1 |" in card, card

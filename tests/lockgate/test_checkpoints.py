"""Durable checkpoints and a launcher that survives preemption, half-written saves and a dead parent.

The trainer here is a shell script that behaves like Axolotl where it matters: it resumes from
the highest ``checkpoint-N`` folder, complete or not, and fails on an incomplete one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lockgate.checkpoints import MARKER, CheckpointStore, CheckpointSync, set_aside_incomplete
from lockgate.errors import TransientError
from lockgate.finetune import work_lock
from lockgate.launchers.local import LocalAxolotlLauncher
from tests.conftest import ROOT

# Resume like Axolotl (highest checkpoint-N, dying on an incomplete one), then train to step 10
# with a complete checkpoint every 5 steps. KILL_AT makes it die (SIGKILL) after that step.
AXOLOTL_LIKE = r"""#!/usr/bin/env bash
echo $$ > trainer.pid
start=0
last=$(ls -d checkpoint-* 2>/dev/null | sed 's/checkpoint-//' | sort -n | tail -1)
if [ -n "$last" ]; then
  [ -f "checkpoint-$last/trainer_state.json" ] || { echo "ValueError: checkpoint-$last is corrupt"; exit 1; }
  start=$last; echo "resume from checkpoint at checkpoint-$last"
fi
echo "Tokenizing Prompts: 100%|#####| 362/362 [00:00<00:00]"
for step in $(seq $((start + 1)) 10); do
  echo " $step/10 [00:01<00:01]"
  sleep ${STEP_SECONDS:-0}
  if [ $((step % 5)) -eq 0 ]; then
    mkdir -p checkpoint-$step && printf 'w%s' $step > checkpoint-$step/adapter_model.safetensors
    echo "{\"global_step\": $step, \"log_history\": [{\"loss\": 1.$step}]}" > checkpoint-$step/trainer_state.json
  fi
  if [ "${KILL_AT:-0}" = "$step" ]; then kill -9 $$; fi
done
printf 'weights' > adapter_model.safetensors && echo '{}' > adapter_config.json
"""


def trainer(tmp_path: Path) -> Path:
    (tmp_path / "c.yaml").write_text("max_steps: 10\n")
    path = tmp_path / "axolotl"
    path.write_text(AXOLOTL_LIKE)
    path.chmod(0o755)
    return path


def complete_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * step)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


@pytest.mark.parametrize("url", ["memory://lockgate-test/ckpt", "local"])
def test_store_keeps_the_newest_complete_checkpoints_and_restores_the_newest(tmp_path: Path, url: str) -> None:
    store = CheckpointStore(str(tmp_path / "store") if url == "local" else f"{url}-{tmp_path.name}")
    out = tmp_path / "out"
    for step in (5, 10, 15):
        assert store.save(complete_checkpoint(out / f"checkpoint-{step}", step))
    assert not store.save(out / "checkpoint-15"), "saving twice is a no-op"
    assert store.steps() == [10, 15], "only the newest two are kept"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restored = store.restore_latest(fresh)
    assert restored == fresh / "checkpoint-15"
    assert (restored / "adapter_model.safetensors").read_bytes() == b"w" * 15
    assert not (restored / MARKER).exists()


def test_a_stored_checkpoint_without_its_marker_or_with_a_short_file_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    out = tmp_path / "out"
    store.save(complete_checkpoint(out / "checkpoint-5", 5))
    store.save(complete_checkpoint(out / "checkpoint-10", 10))
    (tmp_path / "store" / "checkpoint-10" / MARKER).unlink()  # the save died before its marker
    complete_checkpoint(tmp_path / "store" / "checkpoint-20", 20)  # copied by something else, no marker
    with caplog.at_level(logging.WARNING):
        assert store.steps() == [5]
    assert "no complete marker" in caplog.text
    store.save(complete_checkpoint(out / "checkpoint-15", 15))
    (tmp_path / "store" / "checkpoint-15" / "adapter_model.safetensors").write_bytes(b"short")
    assert store.steps() == [5], "a file shorter than its marker says is not a complete checkpoint"


def test_incomplete_local_checkpoint_is_set_aside_and_the_run_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    complete_checkpoint(out / "checkpoint-5", 5)
    (out / "checkpoint-8").mkdir()  # killed during a save: weights half-written, no trainer state
    (out / "checkpoint-8" / "adapter_model.safetensors").write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        run = LocalAxolotlLauncher(trainer(tmp_path)).train(tmp_path / "c.yaml", out, 60)
    assert run.steps == 10 and run.resumed_from == str(out / "checkpoint-5")
    assert "skipping" in caplog.text and "checkpoint-8" in caplog.text
    assert not (out / "checkpoint-8").exists() and list(out.glob("incomplete-checkpoint-8-*"))


def test_a_fresh_worker_with_an_empty_disk_resumes_from_the_store(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    first = tmp_path / "worker-1"
    first.mkdir()
    killed = LocalAxolotlLauncher(trainer(tmp_path), env={"KILL_AT": "7"})
    with pytest.raises(TransientError, match="killed"):
        killed.train(tmp_path / "c.yaml", first, 60, store)
    assert store.steps() == [5], "the checkpoint written before the kill left the worker"
    second = tmp_path / "worker-2"  # another node: nothing of worker-1's disk
    second.mkdir()
    run = LocalAxolotlLauncher(trainer(tmp_path), env={}).train(tmp_path / "c.yaml", second, 60, store)
    assert run.resumed_from == str(second / "checkpoint-5") and run.steps == 10
    assert "resume from checkpoint at checkpoint-5" in (second / "axolotl.log").read_text()
    # The history is the store's, not worker-2's disk: one preemption, steps 6-7 trained twice.
    assert (run.preemptions, run.steps_redone) == (1, 2)
    assert [a["resumed_step"] for a in store.attempts()] == [0, 5]


def test_preemptions_and_redone_steps_are_counted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TransientError):
        LocalAxolotlLauncher(trainer(tmp_path), env={"KILL_AT": "8"}).train(tmp_path / "c.yaml", out, 60)
    run = LocalAxolotlLauncher(trainer(tmp_path), env={}).train(tmp_path / "c.yaml", out, 60)
    assert (run.preemptions, run.steps_redone) == (1, 3), "reached step 8, resumed from 5"


def test_checkpoints_are_synced_while_training(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    out = tmp_path / "out"
    out.mkdir()
    seen: list[list[int]] = []
    launcher = LocalAxolotlLauncher(trainer(tmp_path), env={"STEP_SECONDS": "0.3"})
    with CheckpointSync(out, store, interval_s=0.1):
        t = threading.Thread(target=launcher.train, args=(tmp_path / "c.yaml", out, 60))
        t.start()
        while t.is_alive():
            seen.append(store.steps())
            time.sleep(0.1)
    assert [5] in seen, "checkpoint-5 reached the store before training ended"


def test_a_second_run_of_the_same_inputs_waits_for_the_work_lock(tmp_path: Path) -> None:
    order: list[str] = []

    def hold(name: str, seconds: float) -> None:
        with work_lock(tmp_path):
            order.append(f"{name} in")
            time.sleep(seconds)
            order.append(f"{name} out")

    first = threading.Thread(target=hold, args=("a", 1.0))
    first.start()
    while not order:  # a holds the lock (a fixed head start could run out on a busy machine)
        time.sleep(0.01)
    hold("b", 0)
    first.join()
    assert order == ["a in", "a out", "b in", "b out"]


DRIVER = """
import sys
from pathlib import Path
from lockgate.checkpoints import CheckpointStore
from lockgate.errors import TransientError
from lockgate.launchers.local import LocalAxolotlLauncher
tmp = Path(sys.argv[1])
try:
    LocalAxolotlLauncher(tmp / sys.argv[2], env={"STEP_SECONDS": "1"}).train(
        tmp / "c.yaml", tmp / "out", 120, CheckpointStore(str(tmp / "store"))
    )
except TransientError as exc:
    print("preempted:", exc, flush=True)
    sys.exit(75)
"""


def start_driver(tmp_path: Path, script: str = "axolotl") -> subprocess.Popen[str]:
    trainer(tmp_path)
    # A trainer busy computing prints nothing for long stretches: a dead reader's SIGPIPE won't stop it.
    silent = tmp_path / "silent-axolotl"
    silent.write_text("#!/usr/bin/env bash\necho $$ > trainer.pid\nsleep 60\n")
    silent.chmod(0o755)
    (tmp_path / "out").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", DRIVER, str(tmp_path), script]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill 0; it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_killing_the_parent_leaves_no_trainer_behind(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, "silent-axolotl")
    pid_file = tmp_path / "out" / "trainer.pid"
    wait_for(pid_file.exists)
    trainer_pid = int(pid_file.read_text())
    assert alive(trainer_pid)
    driver.send_signal(signal.SIGKILL)  # the flow process is gone, no cleanup code runs
    driver.wait(timeout=10)
    wait_for(lambda: not alive(trainer_pid), seconds=10)


def test_sigterm_saves_complete_checkpoints_and_stops(tmp_path: Path) -> None:
    driver = start_driver(tmp_path)
    wait_for(lambda: (tmp_path / "out" / "checkpoint-5" / "trainer_state.json").exists())
    trainer_pid = int((tmp_path / "out" / "trainer.pid").read_text())
    driver.send_signal(signal.SIGTERM)  # the spot reclaim notice
    output, _ = driver.communicate(timeout=30)
    assert driver.returncode == 75 and "SIGTERM received" in output, output
    assert CheckpointStore(str(tmp_path / "store")).steps() == [5]
    wait_for(lambda: not alive(trainer_pid), seconds=10)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists(), "it stopped, it did not finish"


def test_set_aside_leaves_complete_checkpoints(tmp_path: Path) -> None:
    complete_checkpoint(tmp_path / "checkpoint-5", 5)
    (tmp_path / "checkpoint-9").mkdir()
    moved = set_aside_incomplete(tmp_path)
    assert [p.name.rsplit("-", 1)[0] for p in moved] == ["incomplete-checkpoint-9"]
    assert (tmp_path / "checkpoint-5").is_dir()


def test_a_run_killed_after_its_last_save_is_not_trained_further(tmp_path: Path) -> None:
    """Resumed at max_steps, Axolotl would train one step more; the checkpoint's adapter is the result."""
    store = CheckpointStore(str(tmp_path / "store"))
    done = complete_checkpoint(tmp_path / "worker-1" / "checkpoint-10", 10)
    (done / "adapter_config.json").write_text("{}")
    (done / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": [{"loss": 1.5}]}))
    store.save(done)
    out = tmp_path / "worker-2"
    out.mkdir()
    run = LocalAxolotlLauncher(trainer(tmp_path), env={}).train(tmp_path / "c.yaml", out, 60, store)
    assert (run.steps, run.train_loss) == (10, 1.5)
    assert not (out / "trainer.pid").exists(), "the trainer was not started"
    assert (out / "adapter_model.safetensors").read_bytes() == b"w" * 10


def test_the_trainer_gets_its_own_wandb_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B exports its service's address to child processes; a trainer killed while attached to
    this process's service would leave its run id in use, and the resumed attempt would fail."""
    monkeypatch.setenv("WANDB_SERVICE", "3-1234-tcp-localhost-5678")
    script = tmp_path / "axolotl"
    script.write_text(
        '#!/usr/bin/env bash\necho "${WANDB_SERVICE:-own}" > service.txt\n'
        "printf 'w' > adapter_model.safetensors && echo '{}' > adapter_config.json\n"
    )
    script.chmod(0o755)
    (tmp_path / "c.yaml").write_text("max_steps: 10\n")
    out = tmp_path / "out"
    out.mkdir()
    LocalAxolotlLauncher(script, env={}).train(tmp_path / "c.yaml", out, 60)
    assert (out / "service.txt").read_text().strip() == "own"


def test_the_sync_keeps_going_after_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One failed save (any error, not only the store's I/O) is logged and retried next round:
    the sync thread does not die and leave every checkpoint to the end of training."""
    store = CheckpointStore(str(tmp_path / "store"))
    out = tmp_path / "out"
    complete_checkpoint(out / "checkpoint-5", 5)
    save = store.save
    calls: list[str] = []

    def refuse_once(checkpoint: Path) -> bool:
        calls.append(checkpoint.name)
        if len(calls) == 1:
            raise RuntimeError("a signing library's hiccup")
        return save(checkpoint)

    monkeypatch.setattr(store, "save", refuse_once)
    with CheckpointSync(out, store, interval_s=0.05) as sync:
        deadline = time.monotonic() + 10
        while store.steps() != [5] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.steps() == [5], "the next round saved it, while training still ran"
    assert sync.errors == ["a signing library's hiccup"]

"""The local launcher: ``axolotl train`` as a subprocess, durable and preemption-aware.

- Half-written ``checkpoint-N`` folders are set aside before Axolotl starts (it would resume
  from the highest one, complete or not).
- The newest complete checkpoint in the checkpoint store is restored first, so a fresh worker
  with an empty disk resumes; every new complete checkpoint is copied out while training.
- The trainer dies with this process (``PR_SET_PDEATHSIG``) and with its process group on a
  timeout: no orphan keeps a GPU busy.
- SIGTERM (a spot reclaim notice) saves what is complete, stops the trainer and raises a
  ``TransientError``, so the run is retried and resumes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from lockgate.checkpoints import CheckpointStore, CheckpointSync, checkpoint_step, latest_local, set_aside_incomplete
from lockgate.errors import ConfigError, StageError, TransientError
from lockgate.launchers import TrainingRun
from lockgate.offline import OFFLINE_DEFAULTS

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# Axolotl and the libraries under it phone home and wait on a dead network for minutes.
OFFLINE_ENV = {
    **OFFLINE_DEFAULTS,
    "AXOLOTL_DO_NOT_TRACK": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "PYTHONUNBUFFERED": "1",
}
ATTEMPTS = "attempts.jsonl"
_PR_SET_PDEATHSIG = 1
# The console script's body, run by its interpreter with -c (see ``trainer_command``).
AXOLOTL_MAIN = "import sys; from axolotl.cli.main import main; sys.argv[0] = 'axolotl'; sys.exit(main())"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that finished writing (has its trainer state)."""
    return latest_local(output_dir)


def _load_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


# Looked up once, before any fork: the child may only call it (no imports, no allocations).
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Preempted(TransientError):
    """The worker was told to stop (SIGTERM): complete checkpoints are saved; a retry resumes."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Preempted`` while training, where signals can be handled (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Preempted("SIGTERM received (spot reclaim?): stopping; complete checkpoints are saved")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trainer_command(axolotl_bin: Path, *args: str) -> list[str]:
    """The command that runs ``axolotl <args>``: the console script's own Python with its body as
    ``-c``, or the executable itself when it is not a Python console script.

    Why not the script: Hugging Face datasets (4.x) saves Axolotl's prepared dataset through a
    spawned process pool, even with one process, and a spawned child first re-imports the parent's
    main module from its file. With the console script as the main module, that is Axolotl's whole
    CLI (torch, transformers), in the pool's worker and in its manager: about 11 s of CPU at the
    start of every fine-tune on two cores. A ``-c`` main has no file to re-import.
    """
    interpreter = _python_of(axolotl_bin)
    if interpreter is None:
        return [str(axolotl_bin), *args]
    return [interpreter, "-c", AXOLOTL_MAIN, *args]


def _python_of(script: Path) -> str | None:
    """The Python interpreter a console script's ``#!`` line names (``env python3`` resolved on
    PATH), or None for anything else (a binary, a shell script)."""
    try:
        with script.open("rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if words and Path(words[0]).name == "env":
        words = words[1:]
        found = shutil.which(words[0]) if words else None
        words = [found] if found else []
    if not words or not Path(words[0]).name.startswith("python") or not Path(words[0]).is_file():
        return None
    return words[0]


class LocalAxolotlLauncher:
    """Runs the trainer environment's ``axolotl train`` as a subprocess on this machine."""

    def __init__(self, axolotl_bin: Path, env: dict[str, str] | None = None) -> None:
        self.axolotl_bin = axolotl_bin
        self.env = OFFLINE_ENV if env is None else env

    def train(
        self, config_path: Path, output_dir: Path, timeout_s: int, checkpoints: CheckpointStore | None = None
    ) -> TrainingRun:
        if not self.axolotl_bin.is_file():
            raise ConfigError(
                f"training.axolotl_bin: {self.axolotl_bin} not found; run `make setup` to build the trainer environment"
            )
        set_aside_incomplete(output_dir)
        resumed = checkpoints.restore_latest(output_dir) if checkpoints else latest_local(output_dir)
        if resumed:
            log.info("resuming from %s", resumed)
        _record_attempt(output_dir, resumed, checkpoints)
        max_steps = _max_steps(config_path)
        log_path = output_dir / "axolotl.log"
        # Killed after its last save, the training is done (Axolotl, resumed there, would train
        # one step past max_steps): its adapter is the checkpoint's.
        done = resumed is not None and max_steps is not None and checkpoint_step(resumed) >= max_steps
        if resumed is not None and done and all((resumed / name).is_file() for name in ADAPTER_FILES):
            log.info("%s is at max_steps=%s: nothing left to train", resumed.name, max_steps)
            for name in ADAPTER_FILES:
                shutil.copy2(resumed / name, output_dir / name)
            steps, loss = _final_state(output_dir)
            preemptions, redone = attempt_history(output_dir, checkpoints)
            return TrainingRun(output_dir, steps, loss, str(resumed), log_path, preemptions, redone)
        # W&B (when the config asks for it) keeps its run files beside the checkpoints.
        env = {**os.environ, "WANDB_DIR": str(output_dir), **self.env}
        env.pop("PYTHONPATH", None)  # the trainer env must not see the app env's packages
        # Nor this process's W&B service (W&B exports its address to children): a trainer
        # killed there leaves its run id "in use", and the resumed attempt could not log to it.
        env.pop("WANDB_SERVICE", None)
        # Axolotl's CLI runs `accelerate launch` unless told not to; one CPU process is enough.
        cmd = trainer_command(self.axolotl_bin, "train", str(config_path), "--launcher", "python")
        sync = CheckpointSync(output_dir, checkpoints) if checkpoints else contextlib.nullcontext()
        timed_out = threading.Event()
        code: int | None = None
        tail: list[str] = []
        with log_path.open("a", encoding="utf-8") as log_fh, sync, _sigterm_raises():
            # Its own process group (a kill takes the trainer's children too), and killed if we die.
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=str(output_dir),
                start_new_session=True,
                preexec_fn=_die_with_parent,  # one libc call, looked up before the fork
            )
            assert proc.stdout is not None

            # A watchdog, not a check per output line: a hung trainer may print nothing at all.
            def expire() -> None:
                timed_out.set()
                _kill_group(proc)

            watchdog = threading.Timer(timeout_s, expire)
            watchdog.start()
            try:
                for line in proc.stdout:
                    log_fh.write(line)
                    tail = [*tail, line.rstrip()][-40:]
                    _note_step(output_dir, line, max_steps)
                    progress = _progress(line)
                    if progress:
                        log.info("axolotl: %s", progress)
                code = proc.wait()
            finally:
                watchdog.cancel()
                if proc.poll() is None:
                    _kill_group(proc)
                    proc.wait()
        if timed_out.is_set():
            raise TransientError(
                f"axolotl train exceeded training.timeout_s={timeout_s}; checkpoints kept in {output_dir}"
            )
        if code != 0:
            raise _training_failure(code or 0, tail, log_path)
        if not all((output_dir / f).is_file() for f in ADAPTER_FILES):
            raise StageError(f"axolotl exited 0 but wrote no adapter in {output_dir}; see {log_path}")
        steps, loss = _final_state(output_dir)
        preemptions, redone = attempt_history(output_dir, checkpoints)
        return TrainingRun(output_dir, steps, loss, str(resumed) if resumed else None, log_path, preemptions, redone)


def _furthest_step(output_dir: Path) -> int:
    marker = output_dir / "furthest-step"
    return int(marker.read_text()) if marker.is_file() else 0


def _record_attempt(output_dir: Path, resumed: Path | None, checkpoints: CheckpointStore | None) -> None:
    """One entry per start: where it resumed, and how far the attempts before it had got.

    With a checkpoint store the entry goes there (a fresh worker's disk has no history);
    otherwise into the output folder.
    """
    reached = max(_furthest_step(output_dir), checkpoints.furthest_step() if checkpoints else 0)
    entry = {"at": time.time(), "resumed_step": checkpoint_step(resumed) if resumed else 0, "reached_before": reached}
    if checkpoints is not None:
        checkpoints.record_attempt(entry)
        return
    with (output_dir / ATTEMPTS).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


_STEP = re.compile(r"\b(\d+)/(\d+) \[")


def _max_steps(config_path: Path) -> int | None:
    try:
        value = yaml.safe_load(config_path.read_text(encoding="utf-8")).get("max_steps")
    except (OSError, AttributeError, yaml.YAMLError):
        return None
    return int(value) if isinstance(value, int) else None


def _note_step(output_dir: Path, line: str, max_steps: int | None) -> None:
    """Remember the furthest optimizer step the trainer reported: tqdm's ``N/max_steps [``
    (other progress bars, such as tokenizing, count rows, not steps)."""
    found = [int(n) for n, total in _STEP.findall(line) if max_steps is not None and int(total) == max_steps]
    if found:
        step = max(found)
        if step > _furthest_step(output_dir):
            (output_dir / "furthest-step").write_text(str(step))


def attempt_history(output_dir: Path, checkpoints: CheckpointStore | None = None) -> tuple[int, int]:
    """``(preemptions survived, optimizer steps redone)`` over every attempt of this run."""
    path = output_dir / ATTEMPTS
    if checkpoints is not None:
        attempts = checkpoints.attempts()
    else:
        attempts = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    redone = sum(max(0, a["reached_before"] - a["resumed_step"]) for a in attempts[1:])
    return max(0, len(attempts) - 1), redone


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


_LOSS = re.compile(r"'loss': '?([0-9.]+)")
_EPOCH = re.compile(r"'epoch': '?([0-9.]+)")
_RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)")


def _progress(line: str) -> str | None:
    """A one-line progress message from an Axolotl log line, or None if it is not one."""
    if runtime := _RUNTIME.search(line):
        return f"training finished in {float(runtime.group(1)):.1f} s"
    loss, epoch = _LOSS.search(line), _EPOCH.search(line)
    if loss and epoch:
        return f"epoch {float(epoch.group(1)):.2f} loss {float(loss.group(1)):.3f}"
    if "Resuming" in line or "resume_from_checkpoint" in line:
        return line.strip()[-160:]
    return None


def _training_failure(code: int, tail: list[str], log_path: Path) -> Exception:
    text = "\n".join(tail)
    if code < 0 or code in (137, 143):
        return TransientError(f"axolotl was killed (exit {code}), likely preempted; re-run resumes. Log: {log_path}")
    hint = ""
    if "num_samples=0" in text or "Dropped" in text:
        hint = " (every row was dropped: raise training.sequence_len)"
    last = next((ln for ln in reversed(tail) if re.search(r"(Error|Exception)", ln)), tail[-1] if tail else "")
    return StageError(f"axolotl train failed (exit {code}){hint}: {last.strip()} — full log: {log_path}")


def _final_state(output_dir: Path) -> tuple[int, float | None]:
    ckpt = latest_checkpoint(output_dir)
    if ckpt is None:
        return 0, None
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
    return int(state.get("global_step", 0)), (float(losses[-1]) if losses else None)

"""Fine-tunes on spot workers, for real: the release trains on a Prefect Docker work pool in the
trainer image, and its containers are killed from outside (`docker kill`, SIGTERM) while they
train, or run out of memory. A few minutes; needs a Docker engine and `make images`."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.containers import image_tags, needs_docker
from tests.factories import adapter_eval_loss
from tests.live import PREFECT, api, stop

pytestmark = [pytest.mark.slow, needs_docker()]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
# The README's tolerance for a resumed run against an uninterrupted one (eval loss, relative):
# CPU training that resumes sees its batches in another order.
RESUME_LOSS_TOLERANCE = 0.05


def docker(*args: str, timeout: int = 60) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def running_finetunes(image: str) -> list[str]:
    """Containers the Docker worker started from the trainer image and that are still running."""
    return docker("ps", "-q", "--filter", f"ancestor={image}", "--filter", "label=io.prefect.flow-run-id").split()


@pytest.fixture
def docker_pool(server: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    """The server with apply.sh's pools and deployments, and a Docker worker on lockgate-docker."""
    url, env = server
    _, trainer, _ = image_tags()
    env = {
        **env,
        "LOCKGATE_TRAINER_IMAGE": trainer,
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),
    }
    applied = subprocess.run(
        [str(ROOT / "deployments" / "apply.sh")], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "lockgate-docker", "--type", "docker"],
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield url, env, trainer
    finally:
        stop(worker)
        leftover = docker("ps", "-aq", "--filter", f"ancestor={trainer}").split()
        if leftover:
            docker("rm", "-f", *leftover)


def attempts_in(store: Path) -> list[dict[str, int]]:
    return [json.loads(p.read_text()) for p in sorted(store.glob("*/attempts/*.json"))]


def durable_steps(store: Path) -> list[int]:
    done = store.glob("*/checkpoint-*/lockgate-complete.json")
    return sorted(int(p.parent.name.split("-")[1]) for p in done)


def test_release_on_the_docker_pool_survives_two_kills_and_a_sigterm(
    docker_pool: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    """The fine-tune container is killed twice at random moments after durable checkpoints, and
    sent SIGTERM once; each time the release re-submits it, a fresh container resumes from the
    checkpoint store, and training reaches max_steps."""
    url, env, trainer = docker_pool
    max_steps = 200
    release_env = {
        **env,
        "LOCKGATE_TRAINING__LAUNCHER": "deployment",
        "LOCKGATE_TRAINING__DEPLOYMENT": "finetune/finetune-docker",
        "LOCKGATE_TRAINING__MAX_STEPS": str(max_steps),
        "LOCKGATE_TRAINING__SAVE_STEPS": "10",
        "LOCKGATE_TRAINING__MAX_RESUBMITS": "4",
    }
    log_path = tmp_path / "release.log"
    release = subprocess.Popen(
        [PYTHON, "-m", "flows", "release"],
        env=release_env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    store = tmp_path / "home" / "artifacts" / "checkpoints"
    rng = random.Random()
    interruptions = [("KILL", 10), ("KILL", 10), ("TERM", 10)]  # signal, after this durable step
    try:
        for n, (sig, after) in enumerate(interruptions, start=1):
            # The n-th container has started training (its attempt is in the store) and a
            # durable checkpoint exists: then a random moment of its run.
            deadline = time.monotonic() + 600
            while not (
                len(attempts_in(store)) >= n
                and durable_steps(store)
                and durable_steps(store)[-1] >= after
                and running_finetunes(trainer)
            ):
                assert release.poll() is None, log_path.read_text()[-4000:]
                assert time.monotonic() < deadline, f"no durable checkpoint-{after} in a running container"
                time.sleep(0.5)
            time.sleep(rng.uniform(0.0, 3.0))  # a random moment in the next stretch of training
            (victim,) = running_finetunes(trainer)
            docker("kill", "--signal", sig, victim)
            if sig == "TERM":  # a spot reclaim notice: the grace period, then the node is gone
                try:
                    docker("wait", victim, timeout=20)
                except (AssertionError, subprocess.TimeoutExpired):
                    docker("kill", victim)
        code = release.wait(timeout=1200)
    finally:
        if release.poll() is None:
            release.kill()
    output = log_path.read_text()
    assert code in (0, 3), output[-4000:]  # trained and gated; a short fine-tune may well be rejected
    assert "re-submitting (3/4)" in output, output[-4000:]
    adapter_dir = next(line.split("`")[1] for line in output.splitlines() if line.startswith("- adapter: `"))
    meta = json.loads((Path(adapter_dir) / "lockgate-adapter.json").read_text())
    assert meta["steps"] == max_steps, "total optimizer steps equal max_steps"
    assert meta["preemptions"] >= 3
    straight, eval_rows, base = uninterrupted_training(Path(adapter_dir), tmp_path / "home", tmp_path)
    resumed_loss = adapter_eval_loss(base, adapter_dir, eval_rows)
    baseline = adapter_eval_loss(base, straight, eval_rows)
    assert abs(resumed_loss - baseline) <= RESUME_LOSS_TOLERANCE * baseline, (
        f"eval loss: resumed {resumed_loss} vs uninterrupted {baseline}"
    )
    assert 0 <= meta["steps_redone"] < max_steps
    attempts = attempts_in(store)
    resumed = [a["resumed_step"] for a in attempts if a["resumed_step"] > 0]
    assert len(resumed) >= 2, f"resumed at least twice from the store: {attempts}"
    runs = api(url, "/flow_runs/filter", {})
    finetunes = sorted(
        (r for r in runs if r["deployment_id"] and "training" in r["parameters"].get("params", {})),
        key=lambda r: r["created"],
    )
    assert [r["state_type"] for r in finetunes][-1] == "COMPLETED"
    assert len(finetunes) >= 4


def test_an_out_of_memory_fine_tune_is_not_resubmitted(
    docker_pool: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    """Docker kills the fine-tune's container for its memory (State.OOMKilled): the release
    says so and stops, instead of re-submitting a run that would hit the same wall."""
    url, env, _ = docker_pool
    release_env = {
        **env,
        "LOCKGATE_TRAINING__LAUNCHER": "deployment",
        "LOCKGATE_TRAINING__DEPLOYMENT": "finetune/finetune-docker",
        "LOCKGATE_TRAINING__JOB_VARIABLES": '{"mem_limit": "160m", "memswap_limit": "160m"}',
    }
    out = subprocess.run(
        [PYTHON, "-m", "flows", "release"], env=release_env, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    output = out.stdout + out.stderr
    assert out.returncode == 1, output[-4000:]
    assert "ran out of memory" in output and "OOMKilled" in output, output[-4000:]
    assert "re-submitting" not in output
    runs = api(url, "/flow_runs/filter", {})
    finetunes = [r for r in runs if r["deployment_id"] and "training" in r["parameters"].get("params", {})]
    assert [r["state_type"] for r in finetunes] == ["CRASHED"]


def uninterrupted_training(adapter_dir: Path, home: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """Train the same config (same seed, same rows) on this machine without interruption.

    Returns the adapter folder, the eval rows and the base model's path."""
    from flows.params import ReleaseParams
    from lockgate.artifacts import LocalArtifactStore
    from lockgate.finetune import filter_rows_that_fit, write_training_data
    from lockgate.launchers.local import LocalAxolotlLauncher
    from lockgate.prep import snapshot_dataset

    settings = ReleaseParams(home=str(home)).settings()
    cfg = yaml.safe_load((adapter_dir / "axolotl.yaml").read_text())
    snapshot = snapshot_dataset(settings.sources, settings.data, LocalArtifactStore(tmp_path / "baseline-artifacts"))
    train = write_training_data(snapshot, tmp_path / "baseline-train.jsonl", False, cfg["seed"])
    filter_rows_that_fit(train, cfg["base_model"], cfg["sequence_len"])
    out = tmp_path / "baseline-out"
    out.mkdir()
    cfg["datasets"][0]["path"] = str(train)
    cfg.update(output_dir=str(out), dataset_prepared_path=str(out / "prepared"))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("wandb_")}
    config = tmp_path / "baseline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = LocalAxolotlLauncher(ROOT / ".venv-trainer" / "bin" / "axolotl").train(config, out, 900)
    assert run.steps == cfg["max_steps"] and run.resumed_from is None
    return out, Path(snapshot.eval_path), cfg["base_model"]

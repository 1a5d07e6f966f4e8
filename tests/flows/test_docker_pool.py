"""Fine-tunes on spot workers, for real: a release's training (`lockgate finetune`; a release for
the out-of-memory case) runs on a Prefect Docker work pool in the trainer image, and its containers
are killed from outside (`docker kill`, SIGTERM) while they train, or run out of memory. A few
minutes; needs a Docker engine and `make images`."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.containers import image_tags, needs_docker
from tests.factories import adapter_eval_loss
from tests.live import PREFECT, Postgres, apply_environment, finetune_runs, live_server, stop

pytestmark = [pytest.mark.slow, needs_docker()]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
# The README's tolerance for a resumed run against an uninterrupted one (eval loss, relative):
# CPU training that resumes sees its batches in another order.
RESUME_LOSS_TOLERANCE = 0.05


def container_env(**variables: str) -> str:
    """training.job_variables for the pool's containers: the given variables, and make test's
    OpenMP wait policy (Makefile TEST_ENV), which a container does not inherit. Without it, the
    container's threads spin while they wait and take the cores from the other test worker."""
    env = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]} if "OMP_WAIT_POLICY" in os.environ else {}
    return json.dumps({**variables, "env": env})


def docker(*args: str, timeout: int = 60) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def running_finetunes(image: str) -> list[str]:
    """Containers the Docker worker started from the trainer image and that are still running."""
    return docker("ps", "-q", "--filter", f"ancestor={image}", "--filter", "label=io.prefect.flow-run-id").split()


@pytest.fixture(scope="module")
def docker_pool(
    postgres: Postgres, prefect_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], str]]:
    """A server with apply.sh's pools and deployments, and a Docker worker on lockgate-docker:
    one for this file's tests (applying the environment and starting the worker take most of a
    minute). The pool's containers mount the state folder apply.sh was given, so the tests share
    it too: each reads only the runs, attempts and checkpoints it made."""
    folder = tmp_path_factory.mktemp("docker-pool")
    _, trainer, _ = image_tags()
    with live_server(postgres, prefect_template, folder) as (url, env):
        env = {
            **env,
            "LOCKGATE_TRAINER_IMAGE": trainer,
            "PREFECT_LOCAL_STORAGE_PATH": str(folder / "prefect" / "storage"),
        }
        apply_environment(env)
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "lockgate-docker", "--type", "docker"],
            env=env,
            stdout=(folder / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            yield url, env, trainer
        finally:
            stop(worker)
            leftover = docker("ps", "-aq", "--filter", f"ancestor={trainer}").split()
            if leftover:
                docker("rm", "-f", *leftover)


def attempts_in(store: Path, *, besides: frozenset[Path] = frozenset()) -> list[dict[str, int]]:
    """The training attempts recorded in the checkpoint store, those in ``besides`` left out."""
    return [json.loads(p.read_text()) for p in sorted(set(store.glob("*/attempts/*.json")) - besides)]


def durable_steps(store: Path) -> list[int]:
    done = store.glob("*/checkpoint-*/lockgate-complete.json")
    return sorted(int(p.parent.name.split("-")[1]) for p in done)


def test_a_fine_tune_on_the_docker_pool_survives_two_kills_and_a_sigterm(
    docker_pool: tuple[str, dict[str, str], str], released: tuple[Path, Any], tmp_path: Path
) -> None:
    """The fine-tune container is killed twice at random moments after durable checkpoints, and
    sent SIGTERM once; each time `lockgate finetune` re-submits it, a fresh container resumes from the
    checkpoint store, and training reaches max_steps. The uninterrupted run it is compared with is
    the session's release of the same data and settings (``released``), trained in one go here."""
    url, env, trainer = docker_pool
    since = datetime.now(UTC)
    _, straight_summary = released
    straight = Path(straight_summary.outputs["adapter"])
    max_steps = json.loads((straight / "lockgate-adapter.json").read_text())["steps"]  # the profile's
    finetune_env = {
        **env,
        "LOCKGATE_TRAINING__LAUNCHER": "deployment",
        "LOCKGATE_TRAINING__DEPLOYMENT": "finetune/finetune-docker",
        "LOCKGATE_TRAINING__SAVE_STEPS": "10",
        "LOCKGATE_TRAINING__MAX_RESUBMITS": "4",
        "LOCKGATE_TRAINING__JOB_VARIABLES": container_env(),
    }
    # `lockgate finetune`: a release's first three stages, the fine-tune on the pool; what a
    # release does after it is the same as for any adapter, tested elsewhere.
    log_path = tmp_path / "finetune.log"
    finetune = subprocess.Popen(
        [PYTHON, "-m", "flows", "finetune"],
        env=finetune_env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    store = Path(env["LOCKGATE_HOME"]) / "artifacts" / "checkpoints"
    earlier = frozenset(store.glob("*/attempts/*.json"))  # the other test's, if it ran first
    rng = random.Random()
    interruptions = [("KILL", 10), ("KILL", 10), ("TERM", 10)]  # signal, after this durable step
    try:
        for n, (sig, after) in enumerate(interruptions, start=1):
            # The n-th container has started training (its attempt is in the store) and a
            # durable checkpoint exists: then a random moment of its run.
            deadline = time.monotonic() + 600
            while not (
                len(attempts_in(store, besides=earlier)) >= n
                and durable_steps(store)
                and durable_steps(store)[-1] >= after
                and running_finetunes(trainer)
            ):
                assert finetune.poll() is None, log_path.read_text()[-4000:]
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
        code = finetune.wait(timeout=1200)
    finally:
        if finetune.poll() is None:
            finetune.kill()
    output = log_path.read_text()
    assert code == 0, output[-4000:]
    assert "re-submitting (3/4)" in output, output[-4000:]
    assert re.search(r"^\d\d:\d\d:\d\d  finetune: completed \(", output, re.M), output[-4000:]  # its stage line
    adapter_dir = next(line.split("`")[1] for line in output.splitlines() if line.startswith("- adapter: `"))
    meta = json.loads((Path(adapter_dir) / "lockgate-adapter.json").read_text())
    assert meta["steps"] == max_steps, "total optimizer steps equal max_steps"
    assert meta["preemptions"] >= 3
    dataset_dir = next(line.split("`")[1] for line in output.splitlines() if line.startswith("- dataset: `"))
    eval_rows = Path(dataset_dir) / "eval.jsonl"
    base = same_training(Path(adapter_dir), straight)
    resumed_loss = adapter_eval_loss(base, adapter_dir, eval_rows)
    baseline = adapter_eval_loss(base, straight, eval_rows)
    assert abs(resumed_loss - baseline) <= RESUME_LOSS_TOLERANCE * baseline, (
        f"eval loss: resumed {resumed_loss} vs uninterrupted {baseline}"
    )
    assert 0 <= meta["steps_redone"] < max_steps
    attempts = attempts_in(store, besides=earlier)
    resumed = [a["resumed_step"] for a in attempts if a["resumed_step"] > 0]
    assert len(resumed) >= 2, f"resumed at least twice from the store: {attempts}"
    finetunes = finetune_runs(url, since)
    assert [r["state_type"] for r in finetunes][-1] == "COMPLETED"
    assert len(finetunes) >= 4


def test_an_out_of_memory_fine_tune_is_not_resubmitted(docker_pool: tuple[str, dict[str, str], str]) -> None:
    """Docker kills the fine-tune's container for its memory (State.OOMKilled): the release
    says so and stops, instead of re-submitting a run that would hit the same wall."""
    url, env, _ = docker_pool
    since = datetime.now(UTC)
    release_env = {
        **env,
        "LOCKGATE_TRAINING__LAUNCHER": "deployment",
        "LOCKGATE_TRAINING__DEPLOYMENT": "finetune/finetune-docker",
        "LOCKGATE_TRAINING__JOB_VARIABLES": container_env(mem_limit="160m", memswap_limit="160m"),
        # Another training than the other test's, which shares the state folder: the adapter it
        # trained would come from the cache, and no container would start.
        "LOCKGATE_TRAINING__MAX_STEPS": "20",
    }
    out = subprocess.run(
        [PYTHON, "-m", "flows", "release"], env=release_env, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    output = out.stdout + out.stderr
    assert out.returncode == 1, output[-4000:]
    assert "ran out of memory" in output and "OOMKilled" in output, output[-4000:]
    assert "re-submitting" not in output
    assert [r["state_type"] for r in finetune_runs(url, since)] == ["CRASHED"]


def same_training(resumed: Path, straight: Path) -> str:
    """Check that two adapters were trained from the same base, rows and config (checkpoint
    cadence, paths and run names aside), so their eval losses may be compared.

    Returns the resumed run's base model folder."""
    metas = [json.loads((p / "lockgate-adapter.json").read_text()) for p in (resumed, straight)]
    for key in ("base_digest", "dataset_digest", "steps", "rows_trained"):
        assert metas[0][key] == metas[1][key], f"{key}: {metas[0][key]} vs {metas[1][key]}"
    assert metas[1]["preemptions"] == 0, "the baseline trained in one go"
    varies = {"base_model", "datasets", "dataset_prepared_path", "output_dir", "save_steps", "wandb_run_id"}
    cfgs = [yaml.safe_load((p / "axolotl.yaml").read_text()) for p in (resumed, straight)]
    assert {k: v for k, v in cfgs[0].items() if k not in varies} == {
        k: v for k, v in cfgs[1].items() if k not in varies
    }, "the two runs trained with other settings"
    return str(cfgs[0]["base_model"])

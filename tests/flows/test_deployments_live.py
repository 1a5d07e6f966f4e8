"""prefect.yaml for real: a local Prefect server, `deployments/apply.sh`, a process worker,
and the event chain data-watch -> lockgate.dataset.changed -> a (debounced) release run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.registry import LocalRegistry
from tests.conftest import ROOT
from tests.live import PREFECT, Postgres, api, apply_environment, events, finetune_runs, live_server, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def applied(
    postgres: Postgres, prefect_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with `deployments/apply.sh`'s environment, a release starting 10 s after a data
    change: one for the tests here that run its deployments (applying takes most of a minute).
    Each test starts the worker it needs (``deployed`` clears up after it)."""
    folder = tmp_path_factory.mktemp("applied")
    with live_server(postgres, prefect_template, folder) as (url, env):
        env = {**env, "LOCKGATE_DATA__CHANGE_WINDOW_S": "10"}
        apply_environment(env)
        yield url, env


@pytest.fixture
def deployed(applied: tuple[str, dict[str, str]]) -> Iterator[tuple[str, dict[str, str]]]:
    """The module's applied server, for one test: what the test left scheduled, pending, running
    or paused is cancelled after it (passed or failed), so the next test's worker runs none of it."""
    yield applied
    url, _ = applied
    unfinished = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"]}}}}
    for run in api(url, "/flow_runs/filter", unfinished):
        cancelled = {"type": "CANCELLED", "name": "Cancelled"}
        api(url, f"/flow_runs/{run['id']}/set_state", {"state": cancelled, "force": True})


def test_data_change_event_starts_the_release_deployment(deployed: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = deployed
    deployments = api(url, "/deployments/filter", {})
    wanted = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in deployments} == {d["name"] for d in wanted}
    release = next(d for d in deployments if d["name"] == "release")

    ran = subprocess.run(
        [PREFECT, "deployment", "run", "data-watch/data-watch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    watch_id = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout).group(1)  # type: ignore[union-attr]
    # A worker that polls once: it runs the watch and exits when the watch's process has (the
    # event is sent by then), before the release the event starts or the prompt-only releases
    # come due. Those are not run here (the UI test runs a release to the end on a worker).
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "lockgate-cpu", "--run-once"],
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        worker.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "the worker did not finish the watch in 5 minutes:\n" + (tmp_path / "worker.log").read_text()[-4000:]
        )
    finally:
        stop(worker)
    assert api(url, f"/flow_runs/{watch_id}")["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()
    changed = events(url, "lockgate.dataset.changed")
    assert len(changed) == 1, changed
    deadline = time.monotonic() + 120
    triggered: list[dict[str, Any]] = []
    while not triggered and time.monotonic() < deadline:
        runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [release["id"]]}}})
        triggered = [r for r in runs if r["parameters"].get("params", {}).get("dataset_digest")]
        time.sleep(2)
    assert len(triggered) == 1, "no release run was triggered by lockgate.dataset.changed"
    assert triggered[0]["parameters"]["params"]["dataset_digest"] == changed[0]["payload"]["digest"]
    assert triggered[0]["parameters"]["params"]["dataset_digest"].startswith("sha256:")
    # Not run here (the UI test runs one to the end), nor by the next test's worker: ``deployed``
    # cancels it, with the prompt-only releases the watch announced and the schedules' runs.


def test_cli_rollback_emits_rolled_back_event(deployed: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = deployed
    # A state folder of its own: its made-up releases must not be the next test's champion. (No
    # automation answers lockgate.model.rolled_back: nothing starts on the shared server.)
    env = {**env, "LOCKGATE_HOME": str(tmp_path / "home")}
    registry = LocalRegistry(tmp_path / "home" / "registry")
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    registry.record_release(a, "/m/a", {}, {}, True, None)
    registry.record_release(b, "/m/b", {}, {}, True, a)
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "rollback", "--reason", "canary errors"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert registry.get("production").digest == a  # type: ignore[union-attr]
    found = events(url, "lockgate.model.rolled_back")
    assert found, "no lockgate.model.rolled_back event reached the server"
    payload = found[0]["payload"]
    assert (payload["previous"], payload["current"], payload["reason"]) == (b, a, "canary errors")


def flow_run_processes(worker_pid: int) -> list[int]:
    """Processes the process worker started for flow runs (they carry the run's id)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == worker_pid and b"PREFECT__FLOW_RUN_ID=" in environ:
            found.append(int(proc.name))
    return found


def test_a_fine_tune_on_the_pool_survives_a_killed_worker(deployed: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """training.launcher=deployment: `lockgate finetune` (a release's training) starts the
    finetune deployment on the process pool; its flow-run process is killed after the first
    durable checkpoint (a lost worker); it is re-submitted, the new run resumes from the
    checkpoint store, and training finishes."""
    url, env = deployed
    home = Path(env["LOCKGATE_HOME"])
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "lockgate-cpu"],
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    finetune_env = {
        **env,
        "LOCKGATE_TRAINING__LAUNCHER": "deployment",
        "LOCKGATE_TRAINING__DEPLOYMENT": "finetune/finetune-local",
        "LOCKGATE_TRAINING__MAX_STEPS": "60",
        "LOCKGATE_TRAINING__SAVE_STEPS": "20",
    }
    # `lockgate finetune`: a release's first three stages, the fine-tune on the pool; what a
    # release does after it is the same as for any adapter, tested elsewhere.
    log_path = tmp_path / "finetune.log"
    finetune = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "finetune"],
        env=finetune_env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    store = home / "artifacts" / "checkpoints"
    durable = "*/checkpoint-*/lockgate-complete.json"
    earlier = set(store.glob(durable))  # the module's state folder: another test's training is not this one
    try:
        deadline = time.monotonic() + 600
        while not set(store.glob(durable)) - earlier:
            assert finetune.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "no durable checkpoint appeared"
            time.sleep(0.5)
        victims = flow_run_processes(worker.pid)
        assert victims, "the fine-tune's flow-run process was not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)  # the worker vanishes, no cleanup runs
        code = finetune.wait(timeout=900)
    finally:
        if finetune.poll() is None:
            finetune.kill()
        stop(worker)
    output = log_path.read_text()
    assert code == 0, output[-4000:]
    assert "crashed" in output and "re-submitting (1/3)" in output, output[-4000:]
    assert re.search(r"^\d\d:\d\d:\d\d  finetune: completed \(", output, re.M), output[-4000:]  # its stage line
    adapter_dir = next(line.split("`")[1] for line in output.splitlines() if line.startswith("- adapter: `"))
    meta = json.loads((Path(adapter_dir) / "lockgate-adapter.json").read_text())
    assert meta["steps"] == 60 and meta["preemptions"] >= 1
    assert 0 <= meta["steps_redone"] < 60
    assert [r["state_type"] for r in finetune_runs(url)] == ["CRASHED", "COMPLETED"]
    axolotl_logs = "".join(p.read_text() for p in (home / "artifacts" / "work").glob("*/out/axolotl.log"))
    assert "resume from checkpoint at" in axolotl_logs, "the re-submitted run resumed from a checkpoint"

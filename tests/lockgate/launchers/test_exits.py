"""Telling a preempted worker from an out-of-memory one: on a real Docker engine, and from
Kubernetes pod statuses."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from lockgate.launchers.exits import DOCKER_FLOW_RUN_LABEL, DockerExitProbe, WorkerExit, pod_exit, worst
from tests.containers import image_tags, needs_docker


def pod(state: dict[str, object], last: dict[str, object] | None = None) -> dict[str, object]:
    status: dict[str, object] = {"name": "finetune", "state": state}
    if last is not None:
        status["lastState"] = last
    return {"metadata": {"name": "finetune-abc"}, "status": {"containerStatuses": [status]}}


def test_a_pod_killed_for_memory_is_out_of_memory() -> None:
    found = pod_exit(pod({"terminated": {"reason": "OOMKilled", "exitCode": 137}}))
    assert found is not None and found.out_of_memory
    assert "OOMKilled" in found.detail and "finetune-abc" in found.detail


def test_a_restarted_pod_remembers_its_oom_kill() -> None:
    found = pod_exit(pod({"running": {}}, last={"terminated": {"reason": "OOMKilled", "exitCode": 137}}))
    assert found is not None and found.out_of_memory


def test_a_reclaimed_pod_is_not_out_of_memory() -> None:
    found = pod_exit(pod({"terminated": {"reason": "Error", "exitCode": 137}}))
    assert found is not None and not found.out_of_memory
    evicted = pod_exit({"metadata": {"name": "p"}, "status": {"reason": "Evicted"}})
    assert evicted == WorkerExit(False, "pod p: Evicted")
    assert pod_exit({"metadata": {"name": "p"}, "status": {}}) is None


def test_one_oom_among_attempts_wins() -> None:
    kill, oom = WorkerExit(False, "killed"), WorkerExit(True, "oom")
    assert worst([kill, oom, kill]) is oom
    assert worst([kill]) is kill
    assert worst([]) is None


def run_container(label: str, options: list[str], *command: str) -> str:
    app, _, _ = image_tags()
    out = subprocess.run(
        ["docker", "run", "-d", "--label", f"{DOCKER_FLOW_RUN_LABEL}={label}", *options, app, *command],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.slow
@needs_docker()
def test_docker_probe_tells_oom_from_kill_and_cleans_up() -> None:
    oom_run, killed_run = str(uuid.uuid4()), str(uuid.uuid4())
    hog = "x = []\nwhile True: x.append(bytearray(8 << 20))"
    # Like Prefect's runner: PID 1 outlives its OOM-killed child by a moment, then exits 0.
    script = f"python -c '{hog}'; sleep 3"
    oom = run_container(oom_run, ["--memory", "64m", "--memory-swap", "64m"], "sh", "-c", script)
    killed = run_container(killed_run, [], "sleep", "600")
    try:
        subprocess.run(["docker", "kill", killed], capture_output=True, check=True, timeout=60)
        subprocess.run(["docker", "wait", killed], capture_output=True, check=True, timeout=60)

        probe = DockerExitProbe()
        found = probe.exit_of(oom_run)  # asked while it still runs: the probe waits for the exit
        assert found is not None and found.out_of_memory, found
        found = probe.exit_of(killed_run)
        assert found is not None and not found.out_of_memory, found
        assert "137" in found.detail
        # What it has read, it removes; a run it cannot find is unknown, not a verdict.
        assert probe.exit_of(oom_run) is None
    finally:
        subprocess.run(["docker", "rm", "-f", oom, killed], capture_output=True)

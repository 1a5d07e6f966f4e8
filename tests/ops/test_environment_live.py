"""The Prefect environment as operators run it: a server on PostgreSQL, `deployments/apply.sh`
applied twice (the second run changes nothing, a drifted object is put back), schedules
planning runs, and a burst of data-change events debounced into one release run."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.live import api, apply_environment

pytestmark = pytest.mark.slow

WINDOW_S = 12  # data.change_window_s here: holds a burst (Prefect allows 10 s at least), short to wait for


def environment(url: str) -> dict[str, Any]:
    """Everything apply.sh writes, as the server holds it (ids and timestamps included)."""
    deployments = api(url, "/deployments/filter", {})
    return {
        "work_pools": sorted(api(url, "/work_pools/filter", {}), key=lambda p: p["name"]),
        "limits": sorted(api(url, "/v2/concurrency_limits/filter", {}), key=lambda c: c["name"]),
        "deployments": sorted(deployments, key=lambda d: d["name"]),
        "automations": sorted(api(url, "/automations/filter", {}), key=lambda a: a["name"]),
        "scheduled_runs": sorted(
            (r["id"], r["deployment_id"], r["expected_start_time"])
            for r in api(url, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
        ),
    }


def emit(env: dict[str, str], events: list[tuple[str, str]], gap_s: float) -> None:
    """lockgate.dataset.changed for each (dataset, digest), ``gap_s`` apart, from one process."""
    script = (
        "import json, sys, time\n"
        "from prefect.events import emit_event\n"
        "from prefect.events.clients import get_events_client\n"
        "from lockgate import events\n"
        "for i, (name, digest) in enumerate(json.loads(sys.argv[1])):\n"
        "    if i: time.sleep(float(sys.argv[2]))\n"
        "    emit_event(event=events.DATASET_CHANGED, resource=events.dataset_resource(name),"
        " payload={'digest': digest})\n"
    )
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", script, json.dumps(events), str(gap_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def query_drift_releases(environment: dict[str, Any]) -> list[dict[str, Any]]:
    """The release deployment's automations that production's query drift fires."""
    releases = [a for a in environment["automations"] if a["name"].startswith("release__automation_")]
    return [a for a in releases if a["trigger"]["match"].get("lockgate.variant") == "production"]


def release_runs(url: str, release_id: str) -> dict[str, list[dict[str, Any]]]:
    """Event-started release runs, by the dataset digest they were started with."""
    runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [release_id]}}})
    found: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        digest = run["parameters"].get("params", {}).get("dataset_digest")
        if digest:
            found.setdefault(digest, []).append(run)
    return found


def test_apply_twice_changes_nothing_and_a_burst_of_changes_starts_one_release(
    server: tuple[str, dict[str, str]],
) -> None:
    url, env = server
    env = {**env, "LOCKGATE_DATA__CHANGE_WINDOW_S": str(WINDOW_S)}
    first = apply_environment(env)
    assert "created   work pool lockgate-cpu" in first and "creating  deployment release/release" in first
    time.sleep(6)  # the scheduler plans the new deployments' runs (every 5 s for recent ones)
    before = environment(url)
    second = apply_environment(env)
    time.sleep(6)
    after = environment(url)
    assert "creat" not in second and "updat" not in second, second
    assert after == before, "a second apply changed the server's objects"

    # The tests above can fail: an object drifted on the server is put back by the next apply.
    release = next(d for d in after["deployments"] if d["name"] == "release")
    api(url, f"/deployments/{release['id']}", {"description": "edited by hand"}, method="PATCH")
    api(url, "/v2/concurrency_limits/gpu-search", {"limit": 7}, method="PATCH")
    # Query drift starts a release only per policy: off by default, on once the settings say so.
    assert [a["enabled"] for a in query_drift_releases(after)] == [False]
    third = apply_environment({**env, "LOCKGATE_DRIFT__RELEASE_ON_QUERY_DRIFT": "true"})
    assert "updating  deployment release/release (description, triggers)" in third, third
    assert [a["enabled"] for a in query_drift_releases(environment(url))] == [True]
    assert "updated   concurrency limit gpu-search" in third, third
    assert api(url, f"/deployments/{release['id']}")["description"] == release["description"]

    # The schedule plans the next runs of the scheduled deployments.
    planned = [r for r in after["scheduled_runs"] if r[1] == release["id"]]
    assert planned, "the weekly release has no runs scheduled"
    automation = next(a for a in after["automations"] if a["name"].startswith("release__automation_"))
    assert automation["trigger"]["within"] == WINDOW_S

    # Three changes of one dataset within the window: one release, with the latest fingerprint.
    # Another dataset's change in between is not held back by them.
    burst = [("debounce-a", "sha256:a1"), ("debounce-b", "sha256:b1"), ("debounce-a", "sha256:a2")]
    emit(env, [*burst, ("debounce-a", "sha256:a3")], gap_s=3)
    deadline = time.monotonic() + WINDOW_S + 60
    while time.monotonic() < deadline:
        found = release_runs(url, release["id"])
        if "sha256:a3" in found and "sha256:b1" in found:
            break
        time.sleep(1)
    # Long enough for a second run, had the burst started one; the online evaluation below is
    # checked meanwhile.
    quiet_until = time.monotonic() + WINDOW_S + 6

    # Query drift (lockgate.drift.detected about served questions) starts an online evaluation and,
    # per policy, a release. (The checks that emit these events are run for real against applied
    # automations in tests/lockgate/serving/test_gateway_vllm.py and tests/flows/test_corpus_drift.py.)
    online = next(d for d in after["deployments"] if d["name"] == "online-eval")
    script = (
        "from prefect.events import emit_event\n"
        "from lockgate import events\n"
        "emit_event(event=events.DRIFT_DETECTED, resource=events.queries_resource('quillstone-qa', 'production'),"
        " payload={'kind': 'queries', 'variant': 'production', 'p_value': 0.005})\n"
    )
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    deadline = time.monotonic() + 60
    started: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not started:
        started = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [online["id"]]}}})
        time.sleep(1)
    assert len(started) == 1, "one online evaluation per drift event"
    deadline = time.monotonic() + 60
    by_policy: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not by_policy:
        runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [release["id"]]}}})
        by_policy = [r for r in runs if not r["auto_scheduled"] and not r["parameters"]["params"].get("dataset_digest")]
        time.sleep(1)
    assert len(by_policy) == 1, "production's query drift started one release (drift.release_on_query_drift)"

    time.sleep(max(0.0, quiet_until - time.monotonic()))
    found = release_runs(url, release["id"])
    assert sorted(found) == ["sha256:a3", "sha256:b1"], f"release runs by digest: {sorted(found)}"
    assert [len(runs) for runs in found.values()] == [1, 1]
    assert found["sha256:b1"][0]["created"] < found["sha256:a3"][0]["created"], "dataset b waited for a's burst"

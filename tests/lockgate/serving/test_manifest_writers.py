"""The serving manifest's two writers, a deploy and the gateway's canary rollback, raced on real
files: the deploy lock (``serving/deploy.lock``) held by another process or thread, and a manifest a
deploy replaced between a rollback's judgement and its write. Nothing here mocks the lock."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lockgate.prompts import GROUNDED_QA
from lockgate.registry import LocalRegistry
from lockgate.serving import (
    CANARY_ROLLED_BACK,
    CanaryMonitor,
    Gateway,
    GatewayOptions,
    KeyStore,
    ManifestWatcher,
    RollbackPolicy,
    ServingManifest,
    Variant,
    add_key,
    load_manifest,
    write_manifest,
)
from lockgate.serving.deploy import deploy_lock
from lockgate.serving.manifest import swap_manifest
from lockgate.serving.retrieval import PromptBook
from lockgate.serving.rollout import record_canary_alias, roll_back_canary
from tests.conftest import ROOT
from tests.lockgate.serving.conftest import FaultyEngine, ServerThread

Event = tuple[str, dict[str, str], dict[str, Any]]


def variant(name: str, digest: str, weight: float, engine_url: str = "http://127.0.0.1:1") -> Variant:
    return Variant(
        name=name,  # type: ignore[arg-type]
        model_digest=digest,
        served_model="lockgate-" + digest[-3:],
        engine_url=engine_url,
        model_path="/" + digest[-3:],
        prompt_version=GROUNDED_QA.version,
        weight=weight,
    )


def canary_of_new(engine_url: str = "http://127.0.0.1:1", weight: float = 0.1) -> ServingManifest:
    """``sha256:old`` serving, ``sha256:new`` (production in the registry) as its canary."""
    return ServingManifest(
        variants=(
            variant("production", "sha256:old", 1 - weight, engine_url),
            variant("canary", "sha256:new", weight, engine_url),
        ),
        max_model_len=256,
    )


def full_rollout_of_new() -> ServingManifest:
    """What a deploy that finished the rollout serves: ``sha256:new`` to everybody, no canary."""
    return ServingManifest(variants=(variant("production", "sha256:new", 1.0),), max_model_len=256)


def registry_with_canary(tmp: Path) -> LocalRegistry:
    """``sha256:new`` promoted over ``sha256:old`` and taking canary traffic."""
    models = LocalRegistry(tmp / "registry")
    assert models.record_release("sha256:old", "/old", {}, {}, True, None)[0] == "promoted"
    assert models.record_release("sha256:new", "/new", {}, {}, True, "sha256:old")[0] == "promoted"
    record_canary_alias(models, "sha256:new")
    return models


def aliases(models: LocalRegistry) -> dict[str, str | None]:
    return {alias: (v.digest if (v := models.get(alias)) else None) for alias in ("production", "canary")}


BEFORE = {"production": "sha256:new", "canary": "sha256:new"}

DEPLOY = """
import sys
from pathlib import Path
from lockgate.serving import load_manifest, write_manifest
from lockgate.serving.deploy import deploy_lock
serving, staged = Path(sys.argv[1]), Path(sys.argv[2])
with deploy_lock(serving, wait_s=5):
    print("held", flush=True)
    sys.stdin.readline()  # the engines start and pass their smoke tests
    write_manifest(serving / "manifest.json", load_manifest(staged))
"""


def test_a_rollback_while_a_deploy_process_holds_the_lock_neither_waits_nor_writes(tmp_path: Path) -> None:
    serving = tmp_path / "serving"
    path = serving / "manifest.json"
    judged = canary_of_new()
    write_manifest(path, judged)
    models = registry_with_canary(tmp_path)
    events: list[Event] = []

    def rolled_back(current: ServingManifest) -> ServingManifest:
        return roll_back_canary(current, models, lambda *e: events.append(e), "error rate 30%")

    # The deploy's new manifest keeps ``sha256:new`` as canary, with more traffic.
    redeployed = canary_of_new(weight=0.2)
    write_manifest(tmp_path / "staged.json", redeployed)
    deploy = subprocess.Popen(
        [sys.executable, "-c", DEPLOY, str(serving), str(tmp_path / "staged.json")],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert deploy.stdout is not None and deploy.stdout.readline().strip() == "held"
        before = path.read_bytes()
        started = time.monotonic()
        outcome = swap_manifest(path, judged, rolled_back, "canary rollback", lock_folder=serving)
        assert outcome == "busy"
        assert time.monotonic() - started < 0.5, "a rollback does not wait for a deploy"
        assert path.read_bytes() == before and events == [] and aliases(models) == BEFORE, "nothing decided"

        assert deploy.stdin is not None
        deploy.stdin.write("go\n")
        deploy.stdin.flush()
        assert deploy.wait(30) == 0
    finally:
        deploy.kill()
        deploy.wait(5)

    # Tried again on the manifest it judged: the deploy replaced it, so nothing is done ...
    assert swap_manifest(path, judged, rolled_back, "canary rollback", lock_folder=serving) == "stale"
    assert load_manifest(path) == redeployed and events == [] and aliases(models) == BEFORE
    # ... and judged on the deploy's manifest, the rollback goes through.
    assert swap_manifest(path, redeployed, rolled_back, "canary rollback", lock_folder=serving) == "swapped"
    after = load_manifest(path)
    assert after.canary is None and after.production.model_digest == "sha256:old"
    assert [name for name, _, _ in events] == [CANARY_ROLLED_BACK]
    assert aliases(models) == {"production": "sha256:old", "canary": None}


def test_a_deploy_waits_while_a_rollback_decides_and_its_manifest_is_not_overwritten(tmp_path: Path) -> None:
    serving = tmp_path / "serving"
    path = serving / "manifest.json"
    judged = canary_of_new()
    write_manifest(path, judged)
    models = registry_with_canary(tmp_path)
    events: list[Event] = []
    deciding, decided = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_rollback(current: ServingManifest) -> ServingManifest:
        deciding.set()
        decided.wait(5)  # the rollback's decision window: aliases read, nothing written yet
        order.append("rollback decided")
        return roll_back_canary(current, models, lambda *e: events.append(e), "error rate 30%")

    outcomes: list[str] = []
    rollback = threading.Thread(
        target=lambda: outcomes.append(swap_manifest(path, judged, slow_rollback, "canary rollback", serving))
    )

    def deploy() -> None:
        with deploy_lock(serving, wait_s=5, poll_s=0.02):
            order.append("deploy holds the lock")
            write_manifest(path, full_rollout_of_new())

    rollback.start()
    assert deciding.wait(5)
    deployer = threading.Thread(target=deploy)
    deployer.start()
    time.sleep(0.3)
    assert order == [] and load_manifest(path) == judged, "the deploy waits for the rollback's decision"
    decided.set()
    rollback.join(5)
    deployer.join(5)
    assert outcomes == ["swapped"] and order == ["rollback decided", "deploy holds the lock"]
    assert load_manifest(path) == full_rollout_of_new(), "the deploy's manifest, written last, stays"
    assert [name for name, _, _ in events] == [CANARY_ROLLED_BACK]


@pytest.fixture(params=[10.0, 1e6], ids=["just-booted", "up-for-days"])
def uptime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """``time.monotonic`` as on a machine up for this many seconds (it counts from boot): a fresh CI
    machine or a new pod reads less than a watcher's ``interval_s``."""
    real = time.monotonic
    offset = request.param - real()
    monkeypatch.setattr(time, "monotonic", lambda: real() + offset)
    return float(request.param)


def test_a_manifest_replaced_after_the_rollback_judged_it_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, uptime: float
) -> None:
    """The gateway judges the copy it serves (re-read at most every ``interval_s``); a deploy that
    finished the rollout meanwhile must not see its canary-less manifest rolled back, nor the now
    production model revoked."""
    serving = tmp_path / "serving"
    path = serving / "manifest.json"
    write_manifest(path, canary_of_new())
    models = registry_with_canary(tmp_path)
    events: list[Event] = []
    watcher = ManifestWatcher(path, interval_s=3600, lock_folder=serving)
    judged = watcher.current()
    with deploy_lock(serving, wait_s=5):
        write_manifest(path, full_rollout_of_new())
    assert watcher.current() == judged, "the gateway has not looked again yet"

    def rolled_back(current: ServingManifest) -> ServingManifest:
        return roll_back_canary(current, models, lambda *e: events.append(e), "error rate 30%")

    with caplog.at_level(logging.WARNING, logger="lockgate.serving.manifest"):
        assert watcher.replace_if_current(judged, rolled_back, "canary rollback (error rate 30%)") == "stale"
    assert load_manifest(path) == full_rollout_of_new() and events == [] and aliases(models) == BEFORE
    assert models.revoked_reason("sha256:new") is None
    assert (
        "canary rollback (error rate 30%) not done" in caplog.text and "was replaced since it was judged" in caplog.text
    )
    assert watcher.current() == full_rollout_of_new(), "the gateway serves the deploy's manifest from the next look"


def test_the_gateway_keeps_serving_while_a_deploy_holds_the_lock_and_rolls_back_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FaultyEngine()
    engine.fail = True
    serving = tmp_path / "serving"
    path = serving / "manifest.json"
    with ServerThread(engine.app()) as server:
        write_manifest(path, canary_of_new(server.url, weight=1.0))
        key = add_key(tmp_path / "keys.json", "alice", 10**9, 10**6)
        reasons: list[str] = []

        def roll_back(live: ServingManifest, reason: str) -> ServingManifest:
            reasons.append(reason)
            return live.without_canary(reason)

        gateway = Gateway(
            manifests=ManifestWatcher(path, interval_s=0.0, lock_folder=serving),
            keys=KeyStore.load(tmp_path / "keys.json"),
            retriever=NoRetrieval(),
            render=PromptBook().render,
            monitor=CanaryMonitor(RollbackPolicy(window_s=600, min_requests=3, max_error_rate=0.2, max_p95_ms=60_000)),
            on_rollback=roll_back,
            options=GatewayOptions(max_tokens=8),
        )
        body = json.dumps({"messages": [{"role": "user", "content": "q"}]})
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with TestClient(gateway.app) as client, caplog.at_level(logging.WARNING, logger="lockgate.serving.gateway"):
            with deploy_lock(serving, wait_s=5):
                before = path.read_bytes()
                for _ in range(6):
                    started = time.monotonic()
                    r = client.post("/v1/chat/completions", content=body, headers=headers)
                    assert r.status_code == 502 and time.monotonic() - started < 2, "requests are not stalled"
                assert reasons == [] and path.read_bytes() == before
                assert gateway.manifests.current().canary is not None
            deferred = [m for m in caplog.messages if "a deploy holds" in m]
            assert len(deferred) == 1 and "trying again on its next request" in deferred[0], "said once"
            client.post("/v1/chat/completions", content=body, headers=headers)
    assert len(reasons) == 1 and load_manifest(path).canary is None and gateway.manifests.current().canary is None
    assert gateway.metrics.registry.get_sample_value("lockgate_gateway_canary_rollbacks_total") == 1


class NoRetrieval:
    """The variants have no index: nothing is retrieved."""

    def contexts(self, variant: Variant, question: str) -> list[str]:
        raise AssertionError("no index: nothing to retrieve")

"""Manual decision mode on a real local Prefect server: the run pauses after the gate and a
typed approval, sent through the API as the UI sends it, decides (a minute)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from lockgate.calibration import simulated_report
from lockgate.gates import decide
from lockgate.policy import GatePolicy
from lockgate.records import ReleaseLineage
from lockgate.registry import LocalRegistry
from lockgate.settings import load_settings
from lockgate.workspace import Workspace
from tasks.release import await_approval, promote
from tests.factories import adapter_artifact, dataset_snapshot, quantized_model

pytestmark = pytest.mark.slow

LINEAGE = ReleaseLineage(
    candidate="sha256:cand", champion="sim:champion", dataset="sha256:data", index="sim:index", prompt_version="sim"
)


@flow(name="approval-under-test")
def gated_promotion(home: str, timeout_s: int) -> str:
    """The release flow's last steps: a passing gate, the approval wait, the promotion."""
    rng = np.random.default_rng(0)
    report = simulated_report(rng.normal(0.3, 0.05, 60), np.full(60, 0.4), ["all"] * 60)
    report = report.model_copy(
        update={
            "dataset_digest": "sha256:data",
            "challenger": report.challenger.model_copy(update={"model_id": "sha256:cand"}),
        }
    )
    policy = GatePolicy(require_quant_check=False, block_on_drift=False)
    decision = decide(report, None, None, policy, LINEAGE)
    assert decision.passed, decision.reasons
    decision = await_approval(decision, timeout_s)
    workspace = Workspace.open(load_settings(overrides={"home": home}))
    staged = workspace.artifacts.staging("quantized")  # signed on commit, as quantize's output is
    (staged / "model").mkdir()
    (staged / "model" / "model.safetensors").write_bytes(b"\x01" * 64)
    _, path = workspace.artifacts.commit("quantized", staged)
    return promote(
        decision=decision,
        candidate=quantized_model().model_copy(update={"path": str(path / "model")}),
        adapter=adapter_artifact(),
        snapshot=dataset_snapshot(),
        expected_production=None,
        workspace=workspace,
    ).action


def run_in_background(home: Path, timeout_s: int) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["action"] = gated_promotion(str(home), timeout_s)
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def paused_run(deadline_s: float = 90) -> UUID:
    with get_client(sync_client=True) as client:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for run in client.read_flow_runs(limit=50):
                if run.state and run.state.is_paused():
                    return run.id
            time.sleep(0.5)
    raise AssertionError("no flow run paused for approval")


def test_approval_through_the_api_promotes(prefect_harness: None, tmp_path: Path) -> None:
    thread, out = run_in_background(tmp_path, timeout_s=120)
    run_id = paused_run()
    registry = LocalRegistry(tmp_path / "registry")
    assert registry.get("production") is None, "nothing moves while the run waits"
    resume_flow_run(run_id, run_input={"approve": True, "reviewer": "ana", "comment": "checked the slices"})
    thread.join(timeout=60)
    assert out.get("action") == "promoted", out
    production = registry.get("production")
    assert production is not None and production.digest == "sha256:cand"
    evidence = registry.history()[-1].evidence
    assert evidence["approval"] == "approved by ana: checked the slices"


def test_no_answer_before_the_timeout_rejects(prefect_harness: None, tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    registry.register("sim:champion", "/m/champ", {})
    registry.set_alias("production", "sim:champion", "before")
    thread, out = run_in_background(tmp_path, timeout_s=8)
    paused_run()
    thread.join(timeout=90)
    assert out.get("action") == "kept", out
    assert registry.get("production").digest == "sim:champion"  # type: ignore[union-attr]
    candidate_move = registry.history()[-1]
    assert candidate_move.alias == "candidate" and candidate_move.evidence["passed"] is False
    assert candidate_move.evidence["approval"] == "no approval within 8 s: rejected"

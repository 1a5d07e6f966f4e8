"""serving.auto_deploy: a deploy run started by a promotion event serves the new model only when it is on.

The engine is pointed at a python that does not exist, so a run that tries to deploy fails at once
with the serving environment's error (no vLLM starts in these tests); a skipped run never gets there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from flows.deploy import DeployParams, deploy
from lockgate.registry import LocalRegistry
from tests.conftest import ROOT

DIGEST = "sha256:" + "c" * 64
EVENT_RESOURCE = "lockgate.model." + "c" * 12


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder whose registry has a production model, and no serving environment."""
    monkeypatch.setenv("LOCKGATE_SERVING__VLLM_PYTHON", str(tmp_path / "no-serving-env" / "python"))
    registry = LocalRegistry(tmp_path / "home" / "registry")
    registry.register(DIGEST, str(tmp_path / "model"), {})
    registry.set_alias("production", DIGEST, "gate passed")
    return tmp_path / "home"


def test_a_promotion_with_auto_deploy_off_deploys_nothing_and_says_so(
    prefect_harness: None, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOCKGATE_SERVING__AUTO_DEPLOY", "off")
    with caplog.at_level(logging.INFO):
        result = deploy(DeployParams(home=str(home), promoted=EVENT_RESOURCE))
    assert result == {"mode": "skipped", "manifest": None, "variants": []}
    assert not (home / "serving").exists()  # no manifest, no engine book: nothing was started
    said = [r.getMessage() for r in caplog.records if "auto_deploy" in r.getMessage()]
    assert said == [
        f"serving.auto_deploy is off: {EVENT_RESOURCE} is not deployed (serve it with `python -m flows deploy`)"
    ]


@pytest.mark.parametrize(
    ("auto_deploy", "promoted"),
    [("on", EVENT_RESOURCE), ("off", None)],
    ids=["promotion-with-auto-deploy-on", "explicit-deploy-with-auto-deploy-off"],
)
def test_a_promotion_with_auto_deploy_on_or_an_explicit_deploy_tries_to_serve(
    prefect_harness: None, home: Path, monkeypatch: pytest.MonkeyPatch, auto_deploy: str, promoted: str | None
) -> None:
    monkeypatch.setenv("LOCKGATE_SERVING__AUTO_DEPLOY", auto_deploy)
    state = deploy(DeployParams(home=str(home), promoted=promoted, canary_weight=0.0), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"serving\.vllm_python: .*no-serving-env/python does not exist"):
        state.result()


def test_the_promotion_trigger_marks_its_runs_as_started_by_a_promotion() -> None:
    """The check above keys on ``promoted``: the deploy deployment's promotion trigger must set it."""
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    (deploy_deployment,) = [d for d in deployments if d["name"] == "deploy"]
    assert "promoted" not in deploy_deployment["parameters"]["params"]  # a run from the UI or CLI deploys
    (trigger,) = deploy_deployment["triggers"]
    assert trigger["expect"] == ["lockgate.model.promoted"]
    assert trigger["parameters"]["params"]["promoted"] == "{{ event.resource.id }}"


def test_a_deploy_while_another_holds_the_state_folder_fails_naming_the_lock(
    prefect_harness: None, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deploys interleaved could stop the engines the other just smoke-tested: the second waits
    (serving.deploy_wait_s), then fails before starting anything."""
    import fcntl

    monkeypatch.setenv("LOCKGATE_SERVING__DEPLOY_WAIT_S", "0.5")
    (home / "serving").mkdir(parents=True)
    with (home / "serving" / "deploy.lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # a deploy in progress
        state = deploy(DeployParams(home=str(home), canary_weight=0.0), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"another deploy still holds .*serving/deploy\.lock after 0\.5s"):
        state.result()
    assert not (home / "serving" / "manifest.json").exists() and not (home / "serving" / "engines.json").exists()

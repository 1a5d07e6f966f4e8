"""The deploy flow against a real vLLM started from the serving environment."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from flows.deploy import DeployParams, deploy
from lockgate.registry import LocalRegistry
from lockgate.serving import load_manifest
from lockgate.serving.vllm import EngineBook, stop_engine
from tests.serving.conftest import VLLM_PYTHON, needs_vllm, tiny_model  # noqa: F401  (the tiny model fixture)

pytestmark = [pytest.mark.slow, needs_vllm]


def test_deploy_serves_production_and_a_failed_smoke_test_keeps_the_old_deployment(
    prefect_harness: None,
    tiny_model: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKGATE_SERVING__VLLM_PYTHON", str(VLLM_PYTHON))
    monkeypatch.setenv("LOCKGATE_SERVING__MAX_MODEL_LEN", "256")
    monkeypatch.setenv("LOCKGATE_SERVING__DRAIN_S", "0")
    monkeypatch.setenv("LOCKGATE_SERVING__ENGINE_PORT", "18500")
    home = tmp_path / "home"
    registry = LocalRegistry(home / "registry")
    registry.register("sha256:" + "a" * 64, str(tiny_model), {})
    registry.set_alias("production", "sha256:" + "a" * 64, "gate passed")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["NoSuchModel"]}))
    registry.register("sha256:" + "b" * 64, str(broken), {})
    book = EngineBook(home / "serving" / "engines.json")
    try:
        result = deploy(DeployParams(home=str(home), canary_weight=0.0))
        assert result["mode"] == "full" and result["variants"] == ["production"]
        manifest = load_manifest(home / "serving" / "manifest.json")
        live = manifest.production
        assert live.served_model == "lockgate-" + "a" * 12 and live.weight == 1.0
        answer = httpx.post(
            f"{live.engine_url}/v1/completions",
            json={"model": live.served_model, "prompt": "Question: hi\nAnswer:", "max_tokens": 4},
            timeout=60,
        )
        assert answer.status_code == 200

        # A new production whose engine cannot start: the run fails, the old deployment keeps serving.
        registry.set_alias("production", "sha256:" + "b" * 64, "gate passed")
        state = deploy(DeployParams(home=str(home), canary_weight=0.0), return_state=True)
        assert state.is_failed()
        with pytest.raises(Exception, match="vLLM exited"):
            state.result()
        assert load_manifest(home / "serving" / "manifest.json") == manifest
        assert httpx.get(f"{live.engine_url}/health", timeout=5).status_code == 200
        assert [e.url for e in book.read()] == [live.engine_url]
    finally:
        for engine in book.read():
            stop_engine(engine.pid)

"""The deploy flow against a real vLLM started from the serving environment."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from flows.deploy import DeployParams, deploy
from lockgate.registry import LocalRegistry
from lockgate.serving import load_manifest
from lockgate.serving.vllm import EngineBook, stop_engine
from lockgate.settings import SigningSettings
from lockgate.signing import open_signing, sign_folder
from tests.lockgate.serving.conftest import VLLM_PYTHON, needs_vllm

pytestmark = [pytest.mark.slow, needs_vllm]


def test_deploy_serves_production_and_a_failed_smoke_test_keeps_the_old_deployment(
    prefect_harness: None,
    tiny_lora: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # deploy serves only what was signed: the adapter, its base, and the canary that never gets served
    signing = open_signing(  # the session's throw-away key (tests/conftest.py)
        SigningSettings(
            private_key=os.environ["LOCKGATE_SIGNING__PRIVATE_KEY"],
            public_key=os.environ["LOCKGATE_SIGNING__PUBLIC_KEY"],
        )
    )
    never_served = tmp_path / "never-served"
    never_served.mkdir()
    (never_served / "config.json").write_text("{}", encoding="utf-8")
    for folder in (tiny_lora, tiny_model, never_served):
        sign_folder(signing, folder)
    monkeypatch.setenv("LOCKGATE_SERVING__VLLM_PYTHON", str(VLLM_PYTHON))
    monkeypatch.setenv("LOCKGATE_SERVING__MAX_MODEL_LEN", "256")
    monkeypatch.setenv("LOCKGATE_SERVING__DRAIN_S", "0")
    monkeypatch.setenv("LOCKGATE_SERVING__ENGINE_PORT", "18500")
    home = tmp_path / "home"
    registry = LocalRegistry(home / "registry")
    # The promoted model is a LoRA adapter: vLLM serves its base with the adapter loaded by name.
    registry.register("sha256:" + "a" * 64, str(tiny_lora), {})
    registry.set_alias("production", "sha256:" + "a" * 64, "gate passed")
    registry.register("sha256:" + "b" * 64, str(never_served), {})
    book = EngineBook(home / "serving" / "engines.json")
    try:
        result = deploy(DeployParams(home=str(home), canary_weight=0.0))
        assert result["mode"] == "full" and result["variants"] == ["production"]
        manifest = load_manifest(home / "serving" / "manifest.json")
        live = manifest.production
        assert live.served_model == "lockgate-" + "a" * 12 and live.weight == 1.0
        assert live.adapter_path == str(tiny_lora) and live.model_path != str(tiny_lora)
        answer = httpx.post(
            f"{live.engine_url}/v1/completions",
            json={"model": live.served_model, "prompt": "Question: hi\nAnswer:", "max_tokens": 4},
            timeout=60,
        )
        assert answer.status_code == 200

        # A new production, as a canary beside the serving model, on an engine that does not serve
        # it: its smoke test fails, so does the run, and the old deployment keeps serving.
        registry.set_alias("production", "sha256:" + "b" * 64, "gate passed")
        monkeypatch.setenv("LOCKGATE_SERVING__ENGINE", "external")
        monkeypatch.setenv("LOCKGATE_SERVING__ENGINE_URL", live.engine_url)
        state = deploy(DeployParams(home=str(home), canary_weight=0.5), return_state=True)
        assert state.is_failed()
        with pytest.raises(Exception, match=r"smoke test of canary \(lockgate-bbbbbbbbbbbb\) failed"):
            state.result()
        assert registry.get("canary") is None
        assert load_manifest(home / "serving" / "manifest.json") == manifest
        assert httpx.get(f"{live.engine_url}/health", timeout=5).status_code == 200
        assert [e.url for e in book.read()] == [live.engine_url]
    finally:
        for engine in book.read():
            stop_engine(engine.pid)

"""A deploy of a tampered production model: refused before any engine starts, named in one line,
the event emitted, the old deployment serving; and the signing key is nowhere to be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tasks.common
from flows.cli import EXIT_FAILED, main
from lockgate import events
from lockgate.artifacts import LocalArtifactStore
from lockgate.prompts import GROUNDED_QA
from lockgate.registry import LocalRegistry
from lockgate.serving import load_manifest, write_manifest
from lockgate.serving.manifest import ServingManifest, Variant
from lockgate.serving.vllm import EngineBook
from lockgate.settings import SigningSettings
from lockgate.signing import open_signing
from tests.lockgate.signing.conftest import signing_env, signing_settings  # noqa: F401  (fixtures)


def model(store: LocalArtifactStore, seed: int) -> tuple[str, Path]:
    staged = store.staging("quantized")
    (staged / "config.json").write_text('{"model_type": "llama"}')
    (staged / "model.safetensors").write_bytes(bytes([seed]) * 4096)
    (staged / "tokenizer.json").write_text("{}")
    return store.commit("quantized", staged)


def test_a_tampered_production_model_is_not_deployed_and_the_old_deployment_keeps_serving(
    prefect_harness: None,
    signing_env: SigningSettings,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An engine that answers nothing: were the check skipped, the deploy would fail later, otherwise.
    monkeypatch.setenv("LOCKGATE_SERVING__ENGINE", "external")
    monkeypatch.setenv("LOCKGATE_SERVING__ENGINE_URL", "http://127.0.0.1:9")
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.common, "emit_event", lambda **event: emitted.append(event))
    home = tmp_path / "home"
    store = LocalArtifactStore(home / "artifacts", open_signing(signing_env))
    serving_digest, serving_path = model(store, 1)
    new_digest, new_path = model(store, 2)
    registry = LocalRegistry(home / "registry")
    for digest, path in ((serving_digest, serving_path), (new_digest, new_path)):
        registry.register(digest, str(path), {})
        registry.set_alias("production", digest, "gate passed")
    live = ServingManifest(
        variants=(
            Variant(
                name="production",
                model_digest=serving_digest,
                served_model="lockgate-serving",
                engine_url="http://127.0.0.1:9",
                model_path=str(serving_path),
                prompt_version=GROUNDED_QA.version,
                weight=1.0,
            ),
        ),
        max_model_len=256,
    )
    write_manifest(home / "serving" / "manifest.json", live)
    weights = new_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[2048] ^= 0x80  # one bit of one byte: one weight changed after the gate looked
    weights.write_bytes(bytes(data))

    with caplog.at_level("INFO"):
        code = main(["--home", str(home), "deploy", "--canary-weight", "0.5"])
    assert code == EXIT_FAILED
    out = capsys.readouterr()
    refused = f"artifact quantized/{new_path.name} refused: model.safetensors was changed since it was signed"
    assert out.err.strip() == f"error: {refused}"
    # The serving model (the canary's stable side) was verified; nothing started, nothing switched.
    assert f"deploy: quantized/{serving_path.name} verified (3 files" in caplog.text
    assert load_manifest(home / "serving" / "manifest.json") == live
    assert EngineBook(home / "serving" / "engines.json").read() == []
    assert registry.get("canary") is None
    assert [e["event"] for e in emitted] == [events.ARTIFACT_TAMPERED]
    assert emitted[0]["resource"]["prefect.resource.id"] == f"lockgate.artifact.quantized.{new_path.name}"
    assert emitted[0]["payload"]["file"] == "model.safetensors"
    assert emitted[0]["payload"]["changes"] == [{"file": "model.safetensors", "change": "changed"}]

    # The private key's contents (and its path) appear in no log line, no file under the state
    # folder, no event and no flow run's parameters.
    private = Path(signing_env.private_key)
    secret_lines = [ln for ln in private.read_text().splitlines() if ln and not ln.startswith("-----")]
    assert secret_lines
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parameters = json.dumps([run.parameters for run in client.read_flow_runs()])
    texts = {"log": caplog.text + out.out + out.err, "events": json.dumps(emitted), "parameters": parameters}
    texts |= {str(p): p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file()}
    for where, text in texts.items():
        for line in secret_lines:
            assert line not in text, f"a line of the private key is in {where}"
    assert str(private) not in texts["log"] + texts["parameters"]

"""The serving image (infra/docker/serving.Dockerfile) for real: built by `make images`, it runs
vLLM with the command line the deploy stage uses, serves a mounted model and its LoRA adapter
by name, and answers an OpenAI completion. This is the image the Helm chart deploys."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from lockgate.serving.vllm import EngineSpec, free_port, vllm_command
from tests.containers import image_tags, needs_docker
from tests.lockgate.serving.conftest import MAX_MODEL_LEN

pytestmark = [pytest.mark.slow, needs_docker()]
PROMPT = "Question: what is a canary release?\nAnswer:"


def test_the_serving_image_serves_a_mounted_model_and_its_adapter(tiny_model: Path, tiny_lora: Path) -> None:
    serving = image_tags()[2]
    port = free_port(18600)
    spec = EngineSpec(model_path="/models/tiny", served_model="tiny", loras=(("tiny-lora", "/models/tiny-lora"),))
    # The deploy stage's own command line, minus "python -m vllm.entrypoints.openai.api_server"
    # (the image's entrypoint).
    args = vllm_command("python", spec, port, MAX_MODEL_LEN, max_lora_rank=8)[3:]
    name = f"lockgate-serving-test-{uuid.uuid4().hex[:8]}"
    mounts = ["-v", f"{tiny_model}:/models/tiny:ro", "-v", f"{tiny_lora}:/models/tiny-lora:ro"]
    run = ["docker", "run", "-d", "--name", name, "--network", "host", "--shm-size", "1g"]
    run += ["-e", "VLLM_CPU_KVCACHE_SPACE=1"]
    started = subprocess.run([*run, *mounts, serving, *args], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            state = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True, timeout=30
            )
            assert state.stdout.strip() == "true", "the serving container stopped:\n" + logs(name)
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vLLM in the serving image did not become healthy:\n" + logs(name)
            time.sleep(1)
        models = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}
        assert models == {"tiny", "tiny-lora"}
        answers = {}
        for model in ("tiny", "tiny-lora"):
            reply = httpx.post(
                f"{url}/v1/completions",
                json={"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0.0},
                timeout=120,
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["usage"]["completion_tokens"] > 0
            answers[model] = body["choices"][0]["text"]
        # The adapter is applied: its (random, non-zero) weights change the greedy answer.
        assert answers["tiny"] != answers["tiny-lora"], answers
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def logs(name: str) -> str:
    out = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr

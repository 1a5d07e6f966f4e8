"""Fixtures for the serving tests: one real vLLM server per module (on the tiny model and adapter of
tests/conftest.py), a gateway served over real HTTP on localhost, and a fault-injecting
OpenAI-compatible double."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lockgate.serving.vllm import EngineSpec, RunningEngine, start_engine, stop_engine
from tests.conftest import ROOT, needs

VLLM_PYTHON = ROOT / ".venv-serving" / "bin" / "python"
needs_vllm = needs(VLLM_PYTHON.exists(), "the serving environment (.venv-serving)", "run `make setup`")
MAX_MODEL_LEN = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn in a thread of this process, on a free localhost port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")  # stopped after its module: an idle vLLM would hold memory for the rest of the run
def vllm_engine(tiny_model: Path, tiny_lora: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    """One real vLLM server (CPU build) per test module: the tiny model as ``tiny`` and, by
    name beside it (multi-LoRA), its adapter as ``tiny-lora``."""
    from lockgate.serving.vllm import free_port as engine_port

    logs = tmp_path_factory.mktemp("vllm-logs")
    engine = start_engine(
        str(VLLM_PYTHON),
        EngineSpec(model_path=str(tiny_model), served_model="tiny", loras=(("tiny-lora", str(tiny_lora)),)),
        engine_port(18400),
        max_model_len=MAX_MODEL_LEN,
        max_lora_rank=8,
        kv_cache_gib=1,
        log_path=logs / "vllm.log",
        timeout_s=300,
    )
    yield engine
    stop_engine(engine.pid)


class FaultyEngine:
    """An OpenAI-compatible completions double whose failures and latency a test sets."""

    def __init__(self) -> None:
        self.fail = False
        self.delay_s = 0.0
        self.calls = 0

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def completions(request: Request) -> JSONResponse:
            body = await request.json()
            self.calls += 1
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                return JSONResponse({"error": {"message": "injected failure"}}, 500)
            return JSONResponse(
                {
                    "id": "cmpl-x",
                    "object": "text_completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                }
            )

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({})

        return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/health", health)])


@pytest.fixture
def faulty_engine() -> Iterator[tuple[FaultyEngine, str]]:
    engine = FaultyEngine()
    with ServerThread(engine.app()) as server:
        yield engine, server.url


def wait_http(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")

"""Measure a checkpoint's speed where it is served: start vLLM on it, smoke-test it, send a fixed
load of completions at a fixed concurrency, and stop it.

Every request asks for exactly ``max_tokens`` tokens (``ignore_eos``), so two checkpoints of the
same model are compared over the same work.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from lockgate.errors import StageError
from lockgate.serving.vllm import EngineSpec, free_port, smoke_test, start_engine, stop_engine


@dataclass(frozen=True)
class ServedSpeed:
    """What one load against one engine measured."""

    tokens_per_s: float
    p50_ms: float
    p95_ms: float
    requests: int
    completion_tokens: int
    sample: str  # the first completion's text, to show the model answered


@dataclass(frozen=True)
class BenchLoad:
    """The load: prompts cycled over ``requests`` completions, ``concurrency`` in flight."""

    prompts: tuple[str, ...]
    requests: int = 16
    concurrency: int = 4
    max_tokens: int = 16


def measure_load(engine_url: str, served_model: str, load: BenchLoad, timeout_s: float = 120.0) -> ServedSpeed:
    """Send ``load`` to a running engine; tokens/s counts completion tokens over the wall time.

    Raises:
        StageError: a request failed or came back without completion tokens.
    """
    if not load.prompts:
        raise StageError("serving benchmark: no prompts")

    def one(i: int) -> tuple[float, int, str]:
        body = {
            "model": served_model,
            "prompt": load.prompts[i % len(load.prompts)],
            "max_tokens": load.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        }
        start = time.perf_counter()
        try:
            r = client.post(f"{engine_url}/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise StageError(f"serving benchmark: {served_model}: {type(exc).__name__}: {exc}") from exc
        ms = (time.perf_counter() - start) * 1000
        if r.status_code != 200:
            raise StageError(f"serving benchmark: {served_model}: HTTP {r.status_code}: {r.text[:200]}")
        data = r.json()
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
        if tokens < 1:
            raise StageError(f"serving benchmark: {served_model} answered no tokens: {str(data)[:200]}")
        return ms, tokens, str(data["choices"][0].get("text", ""))

    with httpx.Client(timeout=timeout_s) as client:
        one(0)  # warm-up: the first request pays for allocations the others do not
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=load.concurrency) as pool:
            results = list(pool.map(one, range(load.requests)))
        wall = time.perf_counter() - start
    latencies = sorted(ms for ms, _, _ in results)
    tokens = sum(t for _, t, _ in results)
    return ServedSpeed(
        tokens_per_s=tokens / wall,
        p50_ms=statistics.median(latencies),
        p95_ms=latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        requests=len(results),
        completion_tokens=tokens,
        sample=results[0][2],
    )


def bench_checkpoint(
    python: str,
    model_path: str,
    load: BenchLoad,
    log_path: Path,
    *,
    port: int = 8500,
    max_model_len: int = 512,
    kv_cache_gib: int = 1,
    start_timeout_s: float = 240.0,
) -> ServedSpeed:
    """Start vLLM on ``model_path``, check it answers, measure ``load``, and stop it (always).

    Raises:
        ConfigError: the serving environment is missing.
        StageError: vLLM did not start, failed its smoke test or a request.
    """
    spec = EngineSpec(model_path=model_path, served_model="bench")
    engine = start_engine(
        python, spec, free_port(port), max_model_len, 8, kv_cache_gib, log_path, timeout_s=start_timeout_s
    )
    try:
        smoke = smoke_test(engine.url, spec.served_model, load.prompts[0])
        if not smoke.passed:
            raise StageError(f"serving benchmark: {model_path}: {smoke.detail}")
        return measure_load(engine.url, spec.served_model, load)
    finally:
        stop_engine(engine.pid)

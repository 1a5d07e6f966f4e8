"""Serving throughput and latency through the gateway, against calling vLLM directly, in one run.

Starts vLLM (the serving environment) on the demo's tiny model and the gateway as its own
process (`python -m flows serve`, retrieval off so the comparison is the gateway alone), then
sends the same bounded load to both at concurrency 1, 8 and 32 over localhost and prints
requests/s, completion tokens/s and p50/p95 latency, the gateway's throughput as a share of
direct vLLM's (target: under 10% loss at concurrency 8) and the gateway's CPU time per request.

Two layouts, each measured in the same run:
- ``separate``, as deployed (the gateway's pods are not on vLLM's GPU nodes): vLLM's processes
  and threads on the first half of the cores, the gateway and the load generator on the rest;
- ``shared``: everything on every core. With two cores, vLLM's busy engine threads take the
  CPU the gateway needs to pass requests on, so this shows co-location, not the gateway's cost.
Each path runs ``ROUNDS`` times, alternating which goes first, and medians are compared. Takes
about 6 minutes.

    .venv/bin/python -m benchmarks.bench_serving
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx

from lockgate.basemodel import build_tiny_llama, corpus_texts
from lockgate.prompts import GROUNDED_QA
from lockgate.serving import ServingManifest, Variant, add_key, write_manifest
from lockgate.serving.canary import p95
from lockgate.serving.vllm import EngineSpec, free_port, start_engine, stop_engine
from lockgate.settings import BaseModelSettings
from tests.conftest import ROOT

# Enough requests that one round lasts seconds, not one: shorter rounds swung by tens of percent.
REQUESTS = {1: 32, 8: 256, 32: 512}
ROUNDS = 5
MAX_TOKENS = 32
QUESTION = "Where does the picker robot charge?"


async def load(
    url: str, body: dict[str, object], headers: dict[str, str], concurrency: int, n: int
) -> dict[str, float]:
    """``n`` requests, ``concurrency`` at a time, from one aiohttp session (a light client: the
    load generator shares its core with the gateway in the ``separate`` layout)."""
    latencies: list[float] = []
    tokens = 0
    queue = list(range(n))

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal tokens
        while queue:
            queue.pop()
            start = time.perf_counter()
            async with client.post(url, json=body, headers=headers) as r:
                r.raise_for_status()
                answer = await r.json()
            latencies.append(time.perf_counter() - start)
            tokens += int(answer["usage"]["completion_tokens"])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as client:
        async with client.post(url, json=body, headers=headers) as warm:  # warm-up
            await warm.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": n / elapsed,
        "tps": tokens / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p95": p95(latencies) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Put a process, its children and every thread of each on ``cpus`` (Linux affinity is per thread)."""
    import psutil

    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(int(task.name), cpus)


def layouts(engine_pid: int, gateway_pid: int) -> list[tuple[str, Callable[[], None]]]:
    """The CPU layouts to measure: ``separate`` (engine apart from gateway and client), then ``shared``."""
    every = set(range(os.cpu_count() or 1))
    half = max(1, len(every) // 2)
    engine_cpus, rest = set(sorted(every)[:half]), set(sorted(every)[half:])

    def separate() -> None:
        pin(engine_pid, engine_cpus)
        pin(gateway_pid, rest)
        pin(os.getpid(), rest)

    def shared() -> None:
        for pid in (engine_pid, gateway_pid, os.getpid()):
            pin(pid, every)

    out: list[tuple[str, Callable[[], None]]] = [("shared", shared)]
    if rest:
        out.insert(0, (f"separate (vLLM on cores {sorted(engine_cpus)}, the rest on {sorted(rest)})", separate))
    return out


def main() -> None:
    python = ROOT / ".venv-serving" / "bin" / "python"
    if not python.exists():
        sys.exit("the serving environment (.venv-serving) is missing: run `make setup`")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = home / "model"
        build_tiny_llama(BaseModelSettings(), corpus_texts(sorted((ROOT / "examples" / "corpus").glob("*.md"))), model)
        engine = start_engine(
            str(python), EngineSpec(str(model), "tiny"), free_port(18600), 512, 8, 1, home / "vllm.log", 300
        )
        gateway = None
        try:
            write_manifest(
                home / "serving" / "manifest.json",
                ServingManifest(
                    variants=(
                        Variant(
                            name="production",
                            model_digest="sha256:bench",
                            served_model="tiny",
                            engine_url=engine.url,
                            model_path=str(model),
                            prompt_version=GROUNDED_QA.version,
                            weight=1.0,
                        ),
                    ),
                    max_model_len=512,
                ),
            )
            key = add_key(home / "serving" / "keys.json", "bench", 10**9, 10**9)
            port = free_port(18700)
            env = {**os.environ, "PYTHONPATH": str(ROOT), "LOCKGATE_SERVING__TOP_K": "0"}
            gateway = subprocess.Popen(
                [sys.executable, "-m", "flows", "--home", str(home), "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("the gateway did not start")
                time.sleep(0.3)
            direct_body = {
                "model": "tiny",
                "prompt": GROUNDED_QA.render(QUESTION),
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
            }
            gateway_body = {
                "model": "lockgate",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
            }
            print(
                f"serving benchmark: tiny Llama on vLLM (CPU), {MAX_TOKENS} tokens per answer, localhost; "
                f"medians of {ROUNDS} alternating rounds (vs direct: the median ratio, then the rounds' range)"
            )
            print(
                f"{'path':9} {'conc':>4} {'req/s':>7} {'tok/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'vs direct':>18} "
                f"{'gw CPU ms/req':>13}"
            )
            for layout, apply in layouts(engine.pid, gateway.pid):
                apply()
                print(f"-- {layout}")
                for concurrency, n in REQUESTS.items():
                    # Each path runs ROUNDS times, alternating which goes first: on two shared cores one run's
                    # throughput swings by tens of percent, so the medians are compared, with the spread.
                    runs: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
                    cpu_ms: list[float] = []
                    for round_ in range(ROUNDS):
                        for path in ("direct", "gateway") if round_ % 2 == 0 else ("gateway", "direct"):
                            if path == "direct":
                                runs["direct"].append(
                                    asyncio.run(load(f"{engine.url}/v1/completions", direct_body, {}, concurrency, n))
                                )
                                continue
                            # The gateway forwards to vLLM's completions API; ask it for the same fixed length.
                            cpu_before = cpu_seconds(gateway.pid)
                            runs["gateway"].append(
                                asyncio.run(
                                    load(
                                        f"http://127.0.0.1:{port}/v1/chat/completions",
                                        gateway_body,
                                        {"Authorization": f"Bearer {key}"},
                                        concurrency,
                                        n,
                                    )
                                )
                            )
                            cpu_ms.append((cpu_seconds(gateway.pid) - cpu_before) * 1000 / (n + 1))
                    shares = [g["tps"] / d["tps"] for d, g in zip(runs["direct"], runs["gateway"], strict=True)]
                    for label in ("direct", "gateway"):
                        row = {k: statistics.median(r[k] for r in runs[label]) for k in ("rps", "tps", "p50", "p95")}
                        share = cpu = ""
                        if label == "gateway":
                            median_share = row["tps"] / statistics.median(r["tps"] for r in runs["direct"])
                            share = f"{median_share:.1%} ({min(shares):.0%}-{max(shares):.0%})"
                            cpu = f"{statistics.median(cpu_ms):.1f}"
                        print(
                            f"{label:9} {concurrency:4d} {row['rps']:7.1f} {row['tps']:8.0f} {row['p50']:8.1f} "
                            f"{row['p95']:8.1f} {share:>18} {cpu:>13}"
                        )
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(timeout=20)
            stop_engine(engine.pid)


if __name__ == "__main__":
    main()

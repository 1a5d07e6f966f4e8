"""vLLM engines: the command line, a local process started from the serving environment, and
the smoke test a deployment must pass before it goes live.

vLLM runs in its own environment (``.venv-serving``: its pins clash with llm-compressor and
Prefect); Lockgate speaks to it only over its OpenAI-compatible HTTP API.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lockgate._io import atomic_write_text, user_cache_dir
from lockgate.digest import digest_json, short
from lockgate.errors import ConfigError, StageError, TransientError
from lockgate.fingerprint import environment_digest

log = logging.getLogger(__name__)

VLLM_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class EngineSpec:
    """One vLLM process: a model under a name, plus LoRA adapters loaded by name."""

    model_path: str
    served_model: str
    loras: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return json.dumps([self.model_path, self.served_model, sorted(self.loras)])


def vllm_command(
    python: str, spec: EngineSpec, port: int, max_model_len: int, max_lora_rank: int, host: str = "127.0.0.1"
) -> list[str]:
    """The command line of vLLM's OpenAI-compatible server for ``spec``."""
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        spec.model_path,
        "--served-model-name",
        spec.served_model,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "bfloat16",
        # torch.compile costs 50-90 s at every start on CPU (its cache does not reload): not worth it here.
        "--enforce-eager",
    ]
    if spec.loras:
        cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(len(spec.loras))]
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in spec.loras)]
    return cmd


def find_serving_python(setting: str) -> Path | None:
    """The serving environment's python a setting names, or None where it is not installed.

    A relative path is looked for under the working folder, then under the checkout this
    library runs from (a test or a flow started elsewhere still finds ``.venv-serving``).
    """
    path = Path(setting)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(__file__).resolve().parents[2] / path]
    return next((c for c in candidates if c.exists()), None)


# Run in the serving environment: does its vLLM run 4-bit weight-only checkpoints on this machine?
# The CPU build has its 4-bit GEMM kernel (``cpu_gemm_wna16``) only in its AVX-512 libraries; on a CPU
# with AVX2 alone a W4A16 model loads, then the engine dies at its first request.
_FOUR_BIT_PROBE = """
from vllm.platforms import current_platform
if current_platform.is_cpu():
    import torch
    current_platform.import_kernels()
    print("4-bit:", "yes" if hasattr(torch.ops._C, "cpu_gemm_wna16") else "no")
else:
    print("4-bit: yes")
"""


@functools.cache
def runs_4bit_weights(python: str) -> bool:
    """Whether the serving environment's vLLM runs 4-bit weight-only models (W4A16) on this machine.

    The probe imports vLLM (about 9 s of CPU), so its answer is kept in the user's cache folder,
    keyed by the environment's distributions and this CPU's flags: asked once per machine and
    environment, not once per deploy. A probe that fails says yes and is not kept: the engine's
    start reports."""
    kept = user_cache_dir("vllm-probes") / f"{probe_key(python)}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return bool(json.loads(kept.read_text(encoding="utf-8"))["runs_4bit_weights"])
    try:
        done = subprocess.run(
            [python, "-c", _FOUR_BIT_PROBE],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **VLLM_ENV},
        )
    except (OSError, subprocess.TimeoutExpired):
        return True
    answer = "4-bit: no" not in done.stdout
    if done.returncode == 0 and "4-bit: " in done.stdout:
        with contextlib.suppress(OSError):  # a read-only cache costs the next process a probe
            atomic_write_text(kept, json.dumps({"python": python, "runs_4bit_weights": answer}) + "\n")
    return answer


def probe_key(python: str) -> str:
    """What a probe's answer depends on: the environment behind ``python`` (its distributions, so a
    rebuilt vLLM is asked again), this CPU's instruction sets, and the probe itself."""
    environment = environment_digest(Path(python))
    return short(digest_json({"environment": environment, "cpu": cpu_flags(), "probe": _FOUR_BIT_PROBE}), 16)


def cpu_flags() -> str:
    """This CPU's feature flags (``/proc/cpuinfo``), or its architecture where they cannot be read."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    return f"{platform.machine()} {platform.processor()}"


def weight_only_bits(model_path: str) -> int | None:
    """The weight bits of a compressed-tensors weight-only checkpoint (4 for W4A16), or None for any
    other model (not quantized, activations quantized too, or not a local folder)."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    groups = (config.get("quantization_config") or {}).get("config_groups") or {}
    bits = {g.get("weights", {}).get("num_bits") for g in groups.values() if not g.get("input_activations")}
    return min(bits) if bits and None not in bits else None


def cannot_run_here(python: str, model_path: str) -> str | None:
    """Why the serving environment's vLLM cannot run ``model_path`` on this machine, or None if it can."""
    if weight_only_bits(model_path) == 4 and not runs_4bit_weights(python):
        return "vLLM's CPU build runs 4-bit weights (W4A16) only with AVX-512, which this CPU lacks"
    return None


def free_port(start: int, host: str = "127.0.0.1", tries: int = 200) -> int:
    """The first port from ``start`` on that nothing listens on."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise TransientError(f"no free port in {start}..{start + tries - 1}")


@dataclass(frozen=True)
class RunningEngine:
    """A vLLM process this machine started."""

    url: str
    pid: int
    spec_key: str
    log_path: str


def start_engine(
    python: str,
    spec: EngineSpec,
    port: int,
    max_model_len: int,
    max_lora_rank: int,
    kv_cache_gib: int,
    log_path: Path,
    timeout_s: float,
) -> RunningEngine:
    """Start vLLM in its own session (it outlives the caller) and wait until ``/health`` answers.

    Raises:
        ConfigError: the serving environment is missing.
        StageError: vLLM exited or did not become healthy in time (the log's tail in the message).
    """
    if not Path(python).exists():
        raise ConfigError(f"serving.vllm_python: {python} does not exist; build the serving environment (make setup)")
    cmd = vllm_command(python, spec, port, max_model_len, max_lora_rank)
    env = {**os.environ, **VLLM_ENV, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    engine = RunningEngine(url=url, pid=proc.pid, spec_key=spec.key, log_path=str(log_path))
    deadline = time.monotonic() + timeout_s
    healthy = False
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StageError(f"vLLM exited with code {proc.returncode} while starting: {_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"{url}/health", timeout=2.0).status_code == 200
            if healthy:
                log.info("vLLM serving %s at %s (pid %d)", spec.served_model, url, proc.pid)
                return engine
            time.sleep(0.5)
        raise StageError(f"vLLM did not become healthy within {timeout_s:.0f}s: {_tail(log_path)}")
    finally:
        if not healthy:  # timed out, exited, or interrupted (Ctrl-C): nobody else knows this engine
            stop_engine(proc.pid)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def stop_engine(pid: int, grace_s: float = 15.0) -> None:
    """Stop a vLLM process group we started: SIGTERM, then SIGKILL after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid if not _alive(pid) else 0
        if done:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class EngineBook:
    """The engines this machine started, in ``<home>/serving/engines.json``, so a later deploy can stop them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[RunningEngine]:
        if not self.path.exists():
            return []
        rows = json.loads(self.path.read_text(encoding="utf-8"))
        return [RunningEngine(**r) for r in rows if _alive(int(r["pid"]))]

    def write(self, engines: list[RunningEngine]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps([e.__dict__ for e in engines], indent=2))


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke test saw."""

    passed: bool
    detail: str
    completion_tokens: int = 0


def smoke_test(engine_url: str, served_model: str, prompt: str, timeout_s: float = 60.0) -> SmokeResult:
    """Does the engine list the model and complete a prompt with tokens and usage? Never raises."""
    try:
        models = httpx.get(f"{engine_url}/v1/models", timeout=timeout_s)
        names = [m.get("id") for m in models.json().get("data", [])] if models.status_code == 200 else []
        if served_model not in names:
            return SmokeResult(False, f"{engine_url} does not serve {served_model!r} (serves {names})")
        answer = httpx.post(
            f"{engine_url}/v1/completions",
            json={"model": served_model, "prompt": prompt, "max_tokens": 8, "temperature": 0.0},
            timeout=timeout_s,
        )
    except (httpx.HTTPError, ValueError) as exc:
        return SmokeResult(False, f"{engine_url}: {type(exc).__name__}: {exc}")
    if answer.status_code != 200:
        return SmokeResult(False, f"{served_model}: HTTP {answer.status_code}: {answer.text[:200]}")
    body: dict[str, Any] = answer.json()
    tokens = int(body.get("usage", {}).get("completion_tokens", 0))
    if not body.get("choices") or tokens < 1:
        return SmokeResult(False, f"{served_model}: no completion tokens in {str(body)[:200]}")
    return SmokeResult(True, f"{served_model} answered {tokens} tokens", tokens)

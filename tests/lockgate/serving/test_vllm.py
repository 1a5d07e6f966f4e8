"""lockgate.serving.vllm without an engine: whether this machine's vLLM runs 4-bit weights (probed once
per environment and CPU, then read from the user's cache folder; the real probe on the serving
environment runs in test_quantized_serving.py), and an engine interrupted while it starts."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from lockgate.serving import vllm
from lockgate.serving.vllm import EngineSpec, runs_4bit_weights, start_engine


def fake_python(tmp_path: Path, answer: str, exit_code: int = 0) -> tuple[str, Path]:
    """An executable that answers the probe as vLLM would and counts how often it was asked."""
    asked = tmp_path / "asked"
    script = tmp_path / f"python-{answer or 'broken'}"
    script.write_text(f'#!/bin/sh\necho x >> "{asked}"\necho "{answer}"\nexit {exit_code}\n')
    script.chmod(0o755)
    return str(script), asked


def times_asked(asked: Path) -> int:
    return len(asked.read_text().splitlines()) if asked.exists() else 0


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs_4bit_weights.cache_clear()
    yield
    runs_4bit_weights.cache_clear()


def test_the_answer_is_kept_per_environment_and_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python, asked = fake_python(tmp_path, "4-bit: no")
    assert runs_4bit_weights(python) is False
    runs_4bit_weights.cache_clear()  # a new process
    assert runs_4bit_weights(python) is False
    assert times_asked(asked) == 1, "a second process asked vLLM again"
    (kept,) = (tmp_path / "cache" / "lockgate" / "vllm-probes").glob("*.json")
    assert json.loads(kept.read_text()) == {"python": python, "runs_4bit_weights": False}

    # Another CPU (the same environment moved to a machine with AVX-512) is asked again.
    monkeypatch.setattr(vllm, "cpu_flags", lambda: "avx2 avx512f")
    runs_4bit_weights.cache_clear()
    assert runs_4bit_weights(python) is False
    assert times_asked(asked) == 2
    # So is a rebuilt environment (here: the executable's bytes).
    Path(python).write_text(Path(python).read_text().replace("4-bit: no", "4-bit: yes"))
    runs_4bit_weights.cache_clear()
    assert runs_4bit_weights(python) is True
    assert times_asked(asked) == 3


def test_a_failed_probe_says_yes_and_is_asked_again(tmp_path: Path) -> None:
    python, asked = fake_python(tmp_path, "", exit_code=1)
    assert runs_4bit_weights(python) is True
    runs_4bit_weights.cache_clear()
    assert runs_4bit_weights(python) is True
    assert times_asked(asked) == 2, "a failed probe's answer was kept"
    assert not (tmp_path / "cache" / "lockgate" / "vllm-probes").exists()


def test_an_engine_interrupted_while_it_starts_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while vLLM starts: the engine runs in its own session and nobody has booked it yet,
    so start_engine stops it before the interruption goes on."""
    never_healthy = tmp_path / "python"
    never_healthy.write_text(f'#!/bin/sh\necho $$ > "{tmp_path / "pid"}"\nexec sleep 120\n')
    never_healthy.chmod(0o755)
    real_sleep = time.sleep  # vllm.time is the time module: patching it patches time.sleep
    # ... for every thread: Ctrl-C reaches this test's thread only, not a library's background
    # thread that sleeps too (Ragas' analytics thread took it once, and start_engine waited 60 s).
    caller = threading.get_ident()

    def interrupted(seconds: float) -> None:
        if threading.get_ident() != caller:
            real_sleep(seconds)
            return
        if (tmp_path / "pid").exists() and not (tmp_path / "interrupted").exists():
            (tmp_path / "interrupted").touch()  # once: stopping the engine waits for real
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(vllm.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        start_engine(str(never_healthy), EngineSpec("m", "m"), vllm.free_port(18_000), 64, 8, 1, tmp_path / "v.log", 60)
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

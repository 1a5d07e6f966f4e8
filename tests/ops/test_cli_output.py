"""The demo's command as a newcomer sees it: one line per finished stage, no traceback, no
library chatter, a closing summary that names the full log; and the same run for scripts."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d  (WARNING |ERROR |CRITICAL )?\S")
PROGRESS = re.compile(r"^\d\d:\d\d:\d\d  ([\w-]+): (completed|cached) \(\d+\.\d s\)$")


def release(home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`python -m flows release` as `make demo` runs it (Makefile's environment), piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOCKGATE_"))}
    env.update(PYTHONPATH=str(ROOT), LOCKGATE_HOME=str(home), WANDB_MODE="offline")
    # As the rest of the suite: vLLM's serving benchmark of the quantized model is tested on its own.
    env["LOCKGATE_QUANTIZATION__SERVING_BENCHMARK"] = os.environ.get("LOCKGATE_QUANTIZATION__SERVING_BENCHMARK", "off")
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "release", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )


def test_the_demo_prints_stage_lines_and_a_summary_naming_its_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = release(home)
    everything = done.stdout + done.stderr
    assert done.returncode == 0, everything[-4000:]
    assert "Traceback" not in everything, everything[-4000:]

    # The terminal (stderr) holds only Lockgate's own lines: no progress bars, gRPC or torch
    # log lines, loguru output or library warnings.
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    strangers = [line for line in lines if not CONSOLE_LINE.match(line)]
    assert strangers == [], "\n".join(strangers[:20])
    progress = Counter(m.group(1) for line in lines if (m := PROGRESS.match(line)))
    assert {"prep-dataset", "finetune", "quantize", "refresh-index", "gate"} <= set(progress), lines
    assert max(progress.values()) == 1, f"more than one progress line for a stage: {progress}"

    # It ends with the summary, which names the log file that has everything.
    out = done.stdout.strip().splitlines()
    assert out[0].startswith("# Release: "), done.stdout[:2000]
    log = Path(re.fullmatch(r"Full log: `(.+)`", out[-1]).group(1))  # type: ignore[union-attr]
    assert log.parent == home / "logs" and log.is_file()
    assert "Finished in state" in log.read_text() or "completed (" in log.read_text()

    # For scripts: the same release again (mostly served from cache), only JSON on stdout.
    again = release(home, "--json")
    assert again.returncode == 0, again.stderr[-4000:]
    summary = json.loads(again.stdout)
    assert summary["passed"] is True and Path(summary["log"]).is_file() and Path(summary["log"]) != log
    assert summary["cached"], "a second run with unchanged data rebuilt every stage"

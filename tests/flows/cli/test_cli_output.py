"""The demo's command as a newcomer sees it: one line per finished stage, no traceback, no
library chatter, a closing summary that names the full log; and the same run for scripts."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from lockgate.serving import load_manifest
from lockgate.serving.vllm import EngineBook
from tests.conftest import ROOT
from tests.flows.conftest import copy_state
from tests.flows.demo import flows, release
from tests.lockgate.serving.conftest import needs_vllm

pytestmark = pytest.mark.slow

CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d  (WARNING |ERROR |CRITICAL )?\S")
PROGRESS = re.compile(r"^\d\d:\d\d:\d\d  ([\w-]+): (completed|cached) \(\d+\.\d s\)$")


def stage_lines(stderr: str) -> Counter[str]:
    """Progress lines per stage; fails on any terminal line that is not Lockgate's own."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    strangers = [line for line in lines if not CONSOLE_LINE.match(line)]
    assert strangers == [], "\n".join(strangers[:20])
    return Counter(m.group(1) for line in lines if (m := PROGRESS.match(line)))


class Demo(NamedTuple):
    """The demo's release (the session's shared one): its state folder, which nobody changes, a
    copy of it to go on from, and what the release printed."""

    home: Path
    copy: Path
    done: subprocess.CompletedProcess[str]


@pytest.fixture
def demo(released_run: tuple[Path, Any, subprocess.CompletedProcess[str]], tmp_path: Path) -> Demo:
    home, _, done = released_run
    return Demo(home, copy_state(home, tmp_path / "home"), done)


def test_the_demo_prints_stage_lines_and_a_summary_naming_its_log(demo: Demo, prefect_api_url: str) -> None:
    home, copy, done = demo
    everything = done.stdout + done.stderr
    assert done.returncode == 0, everything[-4000:]
    assert "Traceback" not in everything, everything[-4000:]

    # The terminal (stderr) holds only Lockgate's own lines: no progress bars, gRPC or torch
    # log lines, loguru output or library warnings.
    progress = stage_lines(done.stderr)
    assert {"prep-dataset", "finetune", "quantize", "refresh-index", "gate"} <= set(progress), done.stderr
    assert max(progress.values()) == 1, f"more than one progress line for a stage: {progress}"

    # It ends with the summary, which names the log file that has everything.
    out = done.stdout.strip().splitlines()
    assert out[0].startswith("# Release: "), done.stdout[:2000]
    log = Path(re.fullmatch(r"Full log: `(.+)`", out[-1]).group(1))  # type: ignore[union-attr]
    assert log.parent == home / "logs" and log.is_file()
    assert "Finished in state" in log.read_text() or "completed (" in log.read_text()
    # Beside the log, the same summary as JSON.
    kept = json.loads(log.with_suffix(".json").read_text())
    assert kept["log"] == str(log) and kept["action"] == "promoted"
    assert f"- quantized: `{kept['outputs']['quantized']}`" in done.stdout

    # For scripts: the same release again (mostly served from cache), only JSON on stdout.
    again = release(copy, "--json", api_url=prefect_api_url)
    assert again.returncode == 0, again.stderr[-4000:]
    summary = json.loads(again.stdout)
    assert summary["passed"] is True and Path(summary["log"]).is_file() and Path(summary["log"]) != log
    assert summary["cached"], "a second run with unchanged data rebuilt every stage"


@needs_vllm
def test_the_demo_ends_with_an_answer_through_the_gateway(demo: Demo) -> None:
    """`make demo`'s last step: deploy, a gateway, a new key, one sample question; what it started is stopped."""
    _, home, released = demo
    assert released.returncode == 0, released.stderr[-4000:]
    done = flows(home, "ask")
    everything = done.stdout + done.stderr
    assert done.returncode == 0, everything[-4000:]
    assert "Traceback" not in everything, everything[-4000:]
    progress = stage_lines(done.stderr)
    assert {"start-and-smoke-test", "switch-manifest", "retire-engines"} <= set(progress), done.stderr
    assert max(progress.values()) == 1, f"more than one progress line for a stage: {progress}"

    out = done.stdout.strip().splitlines()
    first = json.loads((ROOT / "examples" / "data" / "qa.jsonl").read_text().splitlines()[0])["instruction"]
    assert out[0].startswith("Asked through the gateway (http://127.0.0.1:"), done.stdout
    assert out[1] == f"  Q: {first}"
    assert out[2].startswith("  A: ") and len(out[2]) > len("  A: "), done.stdout
    manifest = load_manifest(home / "serving" / "manifest.json")
    production = manifest.production
    assert out[3] == f"  served by: production ({production.served_model}, prompt {production.prompt_version})"
    assert out[-1].startswith("Stopped the gateway and 1 vLLM engine(s) this command started."), done.stdout
    assert "lg-" not in everything  # the key it made is used, never shown

    # The request really went through the gateway (its query log), with the key 'demo' it created.
    (logged,) = [json.loads(line) for line in (home / "serving" / "queries.jsonl").read_text().splitlines()]
    assert logged["variant"] == "production" and logged["question"] == first, logged
    keys = json.loads((home / "serving" / "keys.json").read_text())["keys"]
    assert [k["name"] for k in keys] == ["demo"]
    # Nothing it started outlives it: the engine it deployed is gone.
    assert EngineBook(home / "serving" / "engines.json").read() == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{production.engine_url}/health", timeout=5)


def test_finetune_alone_on_the_demo_state_is_the_adapter_the_release_trained(demo: Demo, prefect_api_url: str) -> None:
    """`lockgate finetune` with the demo's data and settings: prep and the fine-tune's stage lines,
    the release's adapter from cache (relocated into the copy), and a summary naming it and its
    data snapshot; nothing after training runs."""
    home, copy, released = demo
    assert released.returncode == 0, released.stderr[-4000:]
    done = flows(copy, "finetune", api_url=prefect_api_url)
    everything = done.stdout + done.stderr
    assert done.returncode == 0, everything[-4000:]
    assert "Traceback" not in everything, everything[-4000:]
    progress = stage_lines(done.stderr)
    assert {"prep-dataset", "finetune"} <= set(progress), done.stderr
    assert not {"quantize", "refresh-index", "evaluate", "gate", "promote"} & set(progress), done.stderr

    out = done.stdout.strip().splitlines()
    release = json.loads(max((home / "logs").glob("release-*.json"), key=lambda p: p.stat().st_mtime).read_text())
    adapter = Path(release["outputs"]["adapter"])
    assert out[0].startswith("# Fine-tune: adapter "), done.stdout
    assert f"- adapter: `{copy / adapter.relative_to(home)}`" in out, done.stdout
    assert f"- dataset: `{copy / Path(release['outputs']['dataset']).relative_to(home)}`" in out, done.stdout
    log = Path(re.fullmatch(r"Full log: `(.+)`", out[-1]).group(1))  # type: ignore[union-attr]
    assert log.parent == copy / "logs" and log.name.startswith("finetune-")
    kept = json.loads(log.with_suffix(".json").read_text())
    assert kept["cached"] == ["finetune"], kept["cached"]
    assert kept["dataset"] == release["dataset"]
    assert kept["adapter"]["steps"] > 0 and kept["adapter"]["path"] == str(copy / adapter.relative_to(home))

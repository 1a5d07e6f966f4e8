"""The demo's command line as `make demo` runs it, for the tests that read its output or its
state folder (one run per session: ``released_run`` in tests/flows/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from flows.params import ReleaseSummary
from tests.conftest import ROOT


def flows(
    home: Path, *args: str, api_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m flows ARGS` as `make demo` runs it (Makefile's environment), piped.

    Without ``api_url`` the command starts Prefect's temporary server, as on a newcomer's machine;
    with it, the runs, events and artifacts go to that server and its task results to this
    process's result folder, so a release in the test process on a copy of its state folder finds
    its stages cached. Either way it signs with the suite's throw-away key pair
    (tests/conftest.py), never the machine's own. ``env`` adds variables (settings for this run)."""
    extra, env = env or {}, {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOCKGATE_"))}
    env.update({k: v for k, v in os.environ.items() if k.startswith("LOCKGATE_SIGNING__")})
    env.update(PYTHONPATH=str(ROOT), LOCKGATE_HOME=str(home), WANDB_MODE="offline")
    if api_url is not None:
        from prefect.settings import get_current_settings

        env["PREFECT_API_URL"] = api_url
        env["PREFECT_LOCAL_STORAGE_PATH"] = str(get_current_settings().results.local_storage_path)
    # As the rest of the suite: vLLM's serving benchmark of the quantized model is tested on its own.
    env["LOCKGATE_QUANTIZATION__SERVING_BENCHMARK"] = os.environ.get("LOCKGATE_QUANTIZATION__SERVING_BENCHMARK", "off")
    env.update(extra)
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )


def release(home: Path, *flags: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return flows(home, "release", *flags, api_url=api_url)


def saved_summary(home: Path) -> ReleaseSummary:
    """The summary the newest release in ``home`` kept beside its log."""
    newest = max((home / "logs").glob("release-*.json"), key=lambda p: p.stat().st_mtime)
    return ReleaseSummary.model_validate(json.loads(newest.read_text(encoding="utf-8")))

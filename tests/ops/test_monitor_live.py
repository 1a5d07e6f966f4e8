"""`lockgate monitor` for real: Debian's Prometheus with the rendered configuration and the Evidently
UI over the state folder's dashboard, both started by one command and both stopped by one Ctrl-C;
Prometheus scrapes the latest watch values the command serves (what Grafana's watch panels read)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from lockgate.prompts import GROUNDED_QA
from lockgate.serving import ServingManifest, Variant, write_manifest
from lockgate.settings import load_settings
from lockgate.workspace import Workspace
from tests.conftest import ROOT, needs_prometheus
from tests.lockgate.serving.conftest import free_port

pytestmark = [pytest.mark.slow, needs_prometheus()]


def test_monitor_serves_prometheus_and_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "home"
    engine = Variant(
        name="production",
        model_digest="sha256:prod",
        served_model="m",
        engine_url="http://127.0.0.1:9",  # nothing serves there: its target is simply down
        model_path="m",
        prompt_version=GROUNDED_QA.version,
        weight=1.0,
    )
    write_manifest(home / "serving" / "manifest.json", ServingManifest(variants=(engine,), max_model_len=512))
    # What a query-drift check recorded before: Prometheus scrapes it from the command (for Grafana).
    Workspace.open(load_settings(overrides={"home": str(home)})).dashboard.record(
        "query-drift", {"production_query_drift_score": 0.0283}
    )
    port, ui_port, metrics_port = free_port(), free_port(), free_port()
    out = (tmp_path / "monitor.log").open("wb")
    command = [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "--home", str(home), "monitor", "--interval", "1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--ui-port", str(ui_port), "--metrics-port", str(metrics_port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,  # its own process group: whatever happens, the finally below stops all of it
        # As `make test` may be run: in the background, by a shell that leaves SIGINT ignored for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        projects, targets, watched = [], [], []
        deadline = time.monotonic() + 90

        def watch_up() -> bool:  # the target list is read apart from the query: wait for both
            return any(t["labels"]["job"] == "lockgate-watch" and t["health"] == "up" for t in targets)

        while time.monotonic() < deadline and not (projects and watched and watch_up()):
            assert proc.poll() is None, (tmp_path / "monitor.log").read_text()[-3000:]
            try:
                projects = httpx.get(f"http://127.0.0.1:{ui_port}/api/projects", timeout=5).json()
                answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5)
                targets = answer.json()["data"]["activeTargets"] if answer.status_code == 200 else []
                query = {"query": 'lockgate_watch{column="production_query_drift_score"}'}
                answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params=query, timeout=5)
                watched = answer.json()["data"]["result"] if answer.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        assert [p["name"] for p in projects] == ["quillstone-qa"], projects
        jobs = {t["labels"]["job"]: t["health"] for t in targets}
        assert set(jobs) == {"lockgate-gateway", "lockgate-vllm", "lockgate-watch"}, targets
        assert jobs["lockgate-watch"] == "up", targets
        assert [float(w["value"][1]) for w in watched] == [0.0283], watched
        printed = (tmp_path / "monitor.log").read_text()
        assert f"dashboard on http://127.0.0.1:{ui_port}/projects/{projects[0]['id']}" in printed, printed
        proc.send_signal(signal.SIGINT)  # the terminal's Ctrl-C
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # Prometheus and the UI, had the command not stopped them
        out.close()
    for url in (f"http://127.0.0.1:{ui_port}/api/projects", f"http://127.0.0.1:{port}/-/ready"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)

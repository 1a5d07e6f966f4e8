"""``lockgate monitor``: Prometheus over the gateway and its vLLM engines, with the shipped rules, and the
Evidently UI over the dashboard the watch checks record into."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, settings_of


def cmd_monitor(args: argparse.Namespace) -> int:
    """run Prometheus over the gateway and the engines, and the Evidently UI's dashboard (or print the config)

    Renders <home>/monitoring/prometheus.yml: job lockgate-gateway scrapes the gateway
    (serving.host:serving.port) and job lockgate-vllm every engine of the serving manifest, both at
    /metrics, with the shipped recording and alerting rules (p95 latency, error ratio, tokens/s,
    queue depth, negative feedback; lockgate/prometheus/rules.yml). Then runs prometheus on --port
    (data under <home>/monitoring/data) and the Evidently UI on --ui-port over the dashboard the
    watch checks record into (<home>/monitoring/evidently: a project named after data.name with
    query and corpus drift against their thresholds, online quality per variant, the gate's scores
    per release, and latency, tokens/s, errors and queue depth from this Prometheus) until Ctrl-C.
    The latest watch values are also served on --metrics-port as lockgate_watch{column=...} (job
    lockgate-watch), so Grafana can show the same panels. --print-config prints the configuration
    instead; --grafana FILE writes a Grafana dashboard over the same series. Exit 2 when nothing is
    deployed yet or prometheus is not installed (Debian: apt install prometheus).
    """
    from lockgate.errors import ConfigError
    from lockgate.monitoring import RULES, grafana_dashboard, prometheus_config, serve_watch_values
    from lockgate.serving import load_manifest
    from lockgate.workspace import Workspace

    if args.grafana:
        Path(args.grafana).write_text(json.dumps(grafana_dashboard(), indent=1) + "\n", encoding="utf-8")
        print(f"Grafana dashboard written to {args.grafana} (import it and pick your Prometheus data source)")
        return 0
    settings = settings_of(args)
    workspace = Workspace.open(settings)
    manifest = load_manifest(workspace.serving.manifest)
    folder = workspace.home / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.yml"
    shutil.copyfile(RULES, rules)
    gateway = f"{settings.serving.host}:{settings.serving.port}"
    watch = f"127.0.0.1:{args.metrics_port}"
    config = prometheus_config(gateway, [v.engine_url for v in manifest.variants], rules, args.interval, watch)
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    path = folder / "prometheus.yml"
    path.write_text(text, encoding="utf-8")
    if args.print_config:
        print(text, end="")
        return 0
    binary = args.prometheus or os.environ.get("LOCKGATE_PROMETHEUS") or shutil.which("prometheus")
    if not binary:
        raise ConfigError("prometheus is not installed (Debian: apt install prometheus; or --prometheus BIN)")
    from lockgate.dashboard import EvidentlyDashboard

    board = folder / "evidently"
    project = EvidentlyDashboard(board, settings.data.name).project_id()  # its panels, before any record
    argv = [
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{args.port}",
    ]
    ui = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(board)]
    ui += ["--host", "127.0.0.1", "--port", str(args.ui_port)]
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    exporter = serve_watch_values(folder / "latest.json", "127.0.0.1", args.metrics_port)
    print(f"Prometheus on http://127.0.0.1:{args.port} scraping {gateway} and {len(manifest.variants)} engine(s)")
    print(f"dashboard on http://127.0.0.1:{args.ui_port}/projects/{project} (Evidently UI)")
    print(f"watch values for Prometheus (and Grafana) on http://{watch}/metrics")
    print(f"config {path}; logs {logs}; Ctrl-C stops both")
    try:
        return run_until_interrupted({"prometheus": argv, "evidently ui": ui}, logs)
    finally:
        exporter.shutdown()


def run_until_interrupted(commands: dict[str, list[str]], logs: Path) -> int:
    """Start each command (output to ``logs/<name>.log``) and wait; Ctrl-C, SIGTERM or one of them ending stops all.

    Returns 0 after Ctrl-C, 1 when one of them ended by itself (its log's end is printed)."""
    import signal
    import subprocess
    import time

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and a service manager's SIGTERM, stop both; explicit, because a shell that started
    # this command in the background has it inherit SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            with (logs / f"{name.replace(' ', '-')}.log").open("wb") as out:
                running[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        while True:
            for name, proc in running.items():
                if proc.poll() is not None:
                    tail = (logs / f"{name.replace(' ', '-')}.log").read_text(errors="replace")[-1500:]
                    print(f"{name} stopped (exit {proc.returncode}):\n{tail}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def register(subparsers: Any) -> None:
    """Add ``monitor`` to the ``lockgate`` command line."""
    monitor = add_command(subparsers, "monitor", cmd_monitor)
    monitor.add_argument("--port", type=int, default=9090, help="Prometheus' port (default 9090)")
    monitor.add_argument("--ui-port", type=int, default=8000, help="the Evidently UI's port (default 8000)")
    monitor.add_argument(
        "--metrics-port",
        type=int,
        default=9109,
        help="where the latest watch values are served to Prometheus as lockgate_watch (default 9109)",
    )
    monitor.add_argument("--interval", type=float, default=15.0, help="scrape and rule interval in seconds")
    monitor.add_argument("--print-config", action="store_true", help="print prometheus.yml and exit")
    monitor.add_argument("--grafana", default=None, metavar="FILE", help="write a Grafana dashboard JSON and exit")
    monitor.add_argument("--prometheus", default=None, metavar="BIN", help="the prometheus binary (default: on PATH)")

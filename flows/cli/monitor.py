"""``lockgate monitor``: Prometheus over the gateway and its vLLM engines, with the shipped rules."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, settings_of


def cmd_monitor(args: argparse.Namespace) -> int:
    """run Prometheus over the gateway and the deployed engines (or print its config, or the Grafana dashboard)

    Renders <home>/monitoring/prometheus.yml: job lockgate-gateway scrapes the gateway
    (serving.host:serving.port) and job lockgate-vllm every engine of the serving manifest, both at
    /metrics, with the shipped recording and alerting rules (p95 latency, error ratio, tokens/s,
    queue depth, negative feedback; lockgate/prometheus/rules.yml). Then runs prometheus in the
    foreground on --port (data under <home>/monitoring/data) until Ctrl-C. --print-config prints the
    configuration instead; --grafana FILE writes a Grafana dashboard over the same series. Exit 2
    when nothing is deployed yet or prometheus is not installed (Debian: apt install prometheus).
    """
    from lockgate.errors import ConfigError
    from lockgate.monitoring import RULES, grafana_dashboard, prometheus_config
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
    config = prometheus_config(gateway, [v.engine_url for v in manifest.variants], rules, args.interval)
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
    print(f"Prometheus on http://127.0.0.1:{args.port} scraping {gateway} and {len(manifest.variants)} engine(s)")
    print(f"config {path}; Ctrl-C stops it")
    argv = [
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{args.port}",
    ]
    os.execv(binary, argv)  # the terminal's Ctrl-C goes to prometheus itself


def register(subparsers: Any) -> None:
    """Add ``monitor`` to the ``lockgate`` command line."""
    monitor = add_command(subparsers, "monitor", cmd_monitor)
    monitor.add_argument("--port", type=int, default=9090, help="Prometheus' port (default 9090)")
    monitor.add_argument("--interval", type=float, default=15.0, help="scrape and rule interval in seconds")
    monitor.add_argument("--print-config", action="store_true", help="print prometheus.yml and exit")
    monitor.add_argument("--grafana", default=None, metavar="FILE", help="write a Grafana dashboard JSON and exit")
    monitor.add_argument("--prometheus", default=None, metavar="BIN", help="the prometheus binary (default: on PATH)")

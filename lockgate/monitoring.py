"""What watches a deployment's infrastructure: Prometheus' scrape configuration for the gateway and
its vLLM engines (and the latest watch values ``lockgate monitor`` exports), the rules beside it,
and a Grafana dashboard over the recorded series with the Evidently dashboard's watch panels.

The rules ship with the package (``lockgate/prometheus/rules.yml``, unit-tested with ``promtool test
rules``); the configuration is rendered here for one deployment's addresses, so ``lockgate monitor``
and the Helm chart scrape the same jobs under the same names the rules and panels expect.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lockgate.dashboard import PANELS as EVIDENTLY_PANELS
from lockgate.dashboard import WATCH_METRIC, LatestValues, watch_columns, watch_exposition
from lockgate.errors import ConfigError

GATEWAY_JOB = "lockgate-gateway"
ENGINE_JOB = "lockgate-vllm"
WATCH_JOB = "lockgate-watch"  # the latest watch values (drift, online quality, gate), served by `lockgate monitor`
RULES = Path(__file__).resolve().parent / "prometheus" / "rules.yml"


def target(url: str) -> str:
    """``host:port`` of an HTTP base URL, as Prometheus names a target.

    Raises:
        ConfigError: the URL has no host or port.
    """
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if not parts.hostname or parts.port is None:
        raise ConfigError(f"monitoring: {url!r} is not host:port or an http URL with a port")
    return f"{parts.hostname}:{parts.port}"


def prometheus_config(
    gateway: str, engines: Sequence[str], rules: Path = RULES, interval_s: float = 15.0, watch: str | None = None
) -> dict[str, Any]:
    """Prometheus' configuration (``prometheus.yml`` as a mapping) scraping one gateway and its engines.

    Args:
        gateway: the gateway's address (``host:port`` or its base URL); scraped at ``/metrics``.
        engines: the vLLM engines' base URLs, scraped at ``/metrics``.
        rules: the rule file to load (the shipped one by default).
        interval_s: scrape and rule evaluation interval.
        watch: where ``lockgate monitor`` serves the latest watch values (job ``lockgate-watch``), if it does.
    """
    every = f"{interval_s:g}s"
    jobs: list[dict[str, Any]] = [
        {"job_name": GATEWAY_JOB, "static_configs": [{"targets": [target(gateway)]}]},
        {"job_name": ENGINE_JOB, "static_configs": [{"targets": sorted({target(e) for e in engines})}]},
    ]
    if watch is not None:
        jobs.append({"job_name": WATCH_JOB, "static_configs": [{"targets": [target(watch)]}]})
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


def _panel(title: str, expr: str, legend: str, unit: str, slot: int) -> dict[str, Any]:
    return {
        "id": slot + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (slot % 2) * 12, "y": (slot // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }


# Panel title -> (PromQL over the recorded series, legend, Grafana unit).
PANELS: dict[str, tuple[str, str, str]] = {
    "p95 latency by variant": ("lockgate:gateway_latency_seconds:p95_5m", "{{variant}}", "s"),
    "error ratio by variant": ("lockgate:gateway_error_ratio:rate5m", "{{variant}}", "percentunit"),
    "requests/s by variant and status": ("lockgate:gateway_requests:rate5m", "{{variant}} {{status}}", "reqps"),
    "completion tokens/s by variant": ("lockgate:gateway_completion_tokens:rate5m", "{{variant}}", "short"),
    "engine queue depth": ("lockgate:vllm_requests_waiting", "{{instance}} waiting", "short"),
    "engine requests running": ("lockgate:vllm_requests_running", "{{instance}} running", "short"),
    "negative feedback share (1h)": ("lockgate:gateway_feedback_negative_ratio:rate1h", "thumbs down", "percentunit"),
    "targets up": ('up{job=~"lockgate-.*"}', "{{job}} {{instance}}", "short"),
}


def watch_panels() -> dict[str, tuple[str, str, str]]:
    """The Evidently dashboard's panels of watch values (drift against its threshold, online quality,
    the gate's scores), as Grafana panels over what ``lockgate monitor`` exports (``lockgate_watch``)."""
    exported = set(watch_columns())
    panels: dict[str, tuple[str, str, str]] = {}
    for panel in EVIDENTLY_PANELS:
        columns = [c for c, _ in panel.values if c in exported]
        if panel.kind == "line" and columns:
            panels[panel.title] = (f'{WATCH_METRIC}{{column=~"{"|".join(columns)}"}}', "{{column}}", "short")
    return panels


def grafana_dashboard(title: str = "Lockgate serving") -> dict[str, Any]:
    """A Grafana dashboard (JSON model): the recorded serving series, one panel per ``PANELS`` entry,
    then the Evidently dashboard's watch panels (``watch_panels``) over ``lockgate_watch``.

    Import it in Grafana and pick the Prometheus data source that scrapes with
    ``prometheus_config``'s jobs; the panels read the rules' series, as the alerts do.
    """
    everything = {**PANELS, **watch_panels()}
    panels = [_panel(name, *spec, slot=k) for k, (name, spec) in enumerate(everything.items())]
    return {
        "title": title,
        "uid": "lockgate-serving",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["lockgate"],
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def serve_watch_values(latest: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics``: the latest watch values (``watch_exposition`` of ``latest``, read on each
    scrape) for Prometheus' ``lockgate-watch`` job, from a daemon thread; ``shutdown()`` stops it.

    Raises:
        ConfigError: the port is taken.
    """
    values = LatestValues(latest)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = watch_exposition(values.read()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ConfigError(f"monitor: cannot serve the watch values on {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lockgate-watch", daemon=True).start()
    return server

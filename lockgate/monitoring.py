"""What watches a deployment's infrastructure: Prometheus' scrape configuration for the gateway and
its vLLM engines, the rules beside it, and a Grafana dashboard over the recorded series.

The rules ship with the package (``lockgate/prometheus/rules.yml``, unit-tested with ``promtool test
rules``); the configuration is rendered here for one deployment's addresses, so ``lockgate monitor``
and the Helm chart scrape the same jobs under the same names the rules and panels expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lockgate.errors import ConfigError

GATEWAY_JOB = "lockgate-gateway"
ENGINE_JOB = "lockgate-vllm"
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
    gateway: str, engines: Sequence[str], rules: Path = RULES, interval_s: float = 15.0
) -> dict[str, Any]:
    """Prometheus' configuration (``prometheus.yml`` as a mapping) scraping one gateway and its engines.

    Args:
        gateway: the gateway's address (``host:port`` or its base URL); scraped at ``/metrics``.
        engines: the vLLM engines' base URLs, scraped at ``/metrics``.
        rules: the rule file to load (the shipped one by default).
        interval_s: scrape and rule evaluation interval.
    """
    every = f"{interval_s:g}s"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": GATEWAY_JOB, "static_configs": [{"targets": [target(gateway)]}]},
            {"job_name": ENGINE_JOB, "static_configs": [{"targets": sorted({target(e) for e in engines})}]},
        ],
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


def grafana_dashboard(title: str = "Lockgate serving") -> dict[str, Any]:
    """A Grafana dashboard (JSON model) over the recorded series, one panel per ``PANELS`` entry.

    Import it in Grafana and pick the Prometheus data source that scrapes with
    ``prometheus_config``'s jobs; the panels read the rules' series, as the alerts do.
    """
    panels = [_panel(name, *spec, slot=k) for k, (name, spec) in enumerate(PANELS.items())]
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

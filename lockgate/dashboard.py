"""One dashboard of quality beside infrastructure: a project per deployment in the Evidently UI.

Every watch check records what it measured, at its time, into the dashboard (``Dashboard.record``):
query and corpus drift (score and calibrated threshold), online quality per variant, the gate's
offline scores per release, and, from Prometheus over the same window, p95 latency, tokens/s,
queue depth and error rate. The Evidently adapter keeps each record as a snapshot (one Report of
``MeanValue`` per value over a one-row dataset, stamped with the record's time) in a local
Evidently workspace, whose project dashboard has one panel per ``PANELS`` entry; ``evidently ui
--workspace DIR`` (``lockgate monitor``) serves it. Which dashboard is used is a setting
(``monitoring.dashboard``: ``evidently`` or ``off``).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lockgate._io import atomic_write_text, exclusive_lock
from lockgate.errors import ConfigError, LockgateError, TransientError

log = logging.getLogger(__name__)

__all__ = [
    "PANELS",
    "WATCH_METRIC",
    "Dashboard",
    "EvidentlyDashboard",
    "KeepingLatest",
    "LatestValues",
    "NoDashboard",
    "Panel",
    "open_dashboard",
    "prometheus_values",
    "watch_columns",
    "watch_exposition",
]

VARIANTS = ("production", "canary")


@dataclass(frozen=True)
class Panel:
    """A dashboard panel: the values (columns of a record) it draws, with their legends."""

    title: str
    values: tuple[tuple[str, str], ...]
    kind: str = "line"  # line: over time; counter: the latest value, as a number
    description: str = ""


def _per_variant(suffix: str, what: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{variant}_{suffix}", f"{variant} {what}") for variant in VARIANTS)


PANELS: tuple[Panel, ...] = (
    Panel(
        "Query drift (latest)",
        (("production_query_drift_score", "production score"), ("production_query_drift_threshold", "threshold")),
        kind="counter",
        description="The latest query-drift check of production's served questions",
    ),
    Panel(
        "p95 latency (latest, s)",
        (("production_p95_latency_s", "production p95 latency (s)"),),
        kind="counter",
        description="Gateway p95 latency over the last 5 minutes, from Prometheus",
    ),
    Panel(
        "Query drift: score against its calibrated threshold",
        _per_variant("query_drift_score", "score") + _per_variant("query_drift_threshold", "threshold"),
        description="MMD of the last served questions against production's training questions",
    ),
    Panel(
        "Corpus drift: score against its calibrated threshold",
        (("corpus_drift_score", "score"), ("corpus_drift_threshold", "threshold")),
        description="The corpus about to be indexed against the serving index's",
    ),
    Panel(
        "Online quality: best-chunk similarity",
        _per_variant("top_similarity", "similarity"),
        description="Mean similarity of each served question's best retrieved chunk",
    ),
    Panel(
        "Online quality: questions without context and negative ratings",
        _per_variant("no_context_share", "no context") + _per_variant("negative_share", "rated down"),
    ),
    Panel(
        "Online quality: judged faithfulness of served answers",
        _per_variant("faithfulness", "faithfulness"),
        description="Mean judged faithfulness of a sample of answers to their retrieved context (with a judge)",
    ),
    Panel(
        "Gate: offline scores per release",
        (
            ("challenger_rouge_l", "challenger rouge_l"),
            ("champion_rouge_l", "champion rouge_l"),
            ("challenger_semantic_similarity", "challenger semantic similarity"),
        ),
        description="The release's evaluation, challenger against champion",
    ),
    Panel("p95 latency (s)", _per_variant("p95_latency_s", "p95")),
    Panel("Completion tokens/s", _per_variant("tokens_per_s", "tokens/s")),
    Panel("Error ratio", _per_variant("error_ratio", "errors")),
    Panel("Engine queue depth", (("queue_depth", "requests waiting"),)),
)


def finite_values(values: Mapping[str, float | None]) -> dict[str, float]:
    """The values that can be drawn: the finite ones, as floats (None and NaN are left out)."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


class Dashboard(Protocol):
    """Where the watch checks record what they measured."""

    def record(self, kind: str, values: Mapping[str, float], at: datetime | None = None) -> None:
        """Keep ``values`` (named as the panels' columns) measured by a check of ``kind`` at ``at``."""
        ...


class NoDashboard:
    """``monitoring.dashboard: off``: records go nowhere."""

    def record(self, kind: str, values: Mapping[str, float], at: datetime | None = None) -> None:
        return None


def error_map() -> dict[type[BaseException], type[LockgateError]]:
    """What Evidently's exceptions (and what it lets through from pandas and the disk) become."""
    from evidently.errors import EvidentlyError
    from evidently.ui.service.errors import EvidentlyServiceError

    return {
        EvidentlyServiceError: ConfigError,  # the workspace refused the project or the run
        EvidentlyError: ConfigError,  # a metric or panel it cannot build from what we gave it
        OSError: TransientError,  # the workspace folder could not be written: next record tries again
        ValueError: ConfigError,
    }


def _translated(exc: BaseException, what: str) -> LockgateError | None:
    table = error_map()
    for cls in type(exc).__mro__:
        kind = table.get(cls)
        if kind is not None:
            return kind(f"dashboard {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    return None


class EvidentlyDashboard:
    """A project named after the deployment in a local Evidently workspace (what ``evidently ui`` serves)."""

    def __init__(self, folder: Path, project: str) -> None:
        self.folder = folder
        self.project_name = project
        self._project_id: Any = None

    def _workspace(self) -> Any:
        from evidently.ui.workspace import Workspace

        self.folder.mkdir(parents=True, exist_ok=True)
        return Workspace(str(self.folder))

    def project_id(self) -> Any:
        """The deployment's project, made (with its panels) the first time."""
        if self._project_id is not None:
            return self._project_id
        workspace = self._workspace()
        found = [p for p in workspace.list_projects() if p.name == self.project_name]
        if found:
            self._project_id = found[0].id
            return self._project_id
        project = workspace.create_project(self.project_name, description="Lockgate: quality beside infrastructure")
        for panel in PANELS:
            project.dashboard.add_panel(_panel_of(panel))
        self._project_id = project.id
        return self._project_id

    def record(self, kind: str, values: Mapping[str, float], at: datetime | None = None) -> None:
        """One snapshot of ``values`` (finite ones) at ``at``; raises a Lockgate error naming what failed."""
        finite = finite_values(values)
        if not finite:
            return
        try:
            import pandas as pd
            from evidently import DataDefinition, Dataset, Report
            from evidently.metrics import MeanValue

            frame = pd.DataFrame([finite])
            data = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(finite)))
            report = Report([MeanValue(column=c) for c in finite])
            snapshot = report.run(data, None, timestamp=at or datetime.now(UTC), tags=[kind], name=kind)
            self._workspace().add_run(self.project_id(), snapshot)
        except LockgateError:
            raise
        except Exception as exc:
            mapped = _translated(exc, f"{self.folder} ({kind})")
            if mapped is None:
                raise
            raise mapped from exc


def _panel_of(panel: Panel) -> Any:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    metrics = [
        PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": column})
        for column, legend in panel.values
    ]
    if panel.kind == "counter":
        return counter_panel(panel.title, metrics, description=panel.description, size="half", aggregation="last")
    return line_plot_panel(panel.title, metrics, description=panel.description or None)


def open_dashboard(kind: str, folder: Path, project: str, latest: Path | None = None) -> Dashboard:
    """The dashboard ``monitoring.dashboard`` names: ``evidently`` (a project in ``folder``) or ``off``;
    with ``latest``, every record also updates that file of latest values (what ``lockgate monitor``
    exports to Prometheus for Grafana), whichever dashboard is chosen."""
    inner: Dashboard
    if kind == "off":
        inner = NoDashboard()
    elif kind == "evidently":
        inner = EvidentlyDashboard(folder, project)
    else:
        raise ConfigError(f"monitoring.dashboard: unknown dashboard {kind!r} (evidently or off)")
    return inner if latest is None else KeepingLatest(inner, LatestValues(latest))


# Recorded series (lockgate/prometheus/rules.yml) -> the dashboard's column, by variant.
SERVING_SERIES: dict[str, str] = {
    "lockgate:gateway_latency_seconds:p95_5m": "p95_latency_s",
    "lockgate:gateway_completion_tokens:rate5m": "tokens_per_s",
    "lockgate:gateway_error_ratio:rate5m": "error_ratio",
}
QUEUE_SERIES = "lockgate:vllm_requests_waiting"
QUEUE_COLUMN = "queue_depth"
# Columns whose values come from Prometheus itself: never exported back to it.
FROM_PROMETHEUS = (*SERVING_SERIES.values(), QUEUE_COLUMN)
# What Prometheus scrapes from ``lockgate monitor``: the latest value of each watch column.
WATCH_METRIC = "lockgate_watch"


def watch_columns() -> list[str]:
    """The dashboard columns measured by the watch checks (drift, online quality, the gate), in panel order."""
    columns: list[str] = []
    for panel in PANELS:
        for column, _ in panel.values:
            if column not in columns and not column.endswith(FROM_PROMETHEUS):
                columns.append(column)
    return columns


class LatestValues:
    """The latest value of each dashboard column and when it was measured, in one JSON file
    (``<home>/monitoring/latest.json``), written under a lock and atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def update(self, values: Mapping[str, float], at: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path.with_name(self.path.name + ".lock"), None, lambda: None):
            kept = self.read()
            kept.update({k: {"value": float(v), "at": at.timestamp()} for k, v in values.items()})
            atomic_write_text(self.path, json.dumps(kept, indent=1, sort_keys=True))

    def read(self) -> dict[str, dict[str, float]]:
        """Column -> ``{"value", "at"}``; a missing or unreadable file is nothing recorded yet."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(k): {"value": float(v["value"]), "at": float(v["at"])}
            for k, v in data.items()
            if isinstance(v, dict) and isinstance(v.get("value"), int | float) and isinstance(v.get("at"), int | float)
        }


class KeepingLatest:
    """A dashboard that also keeps each column's latest value (``LatestValues``)."""

    def __init__(self, inner: Dashboard, latest: LatestValues) -> None:
        self.inner = inner
        self.latest = latest

    def record(self, kind: str, values: Mapping[str, float], at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        finite = finite_values(values)
        try:
            self.latest.update(finite, at)
        except OSError as exc:
            raise TransientError(f"dashboard {self.latest.path}: {exc}") from None
        self.inner.record(kind, values, at)


def watch_exposition(latest: Mapping[str, Mapping[str, float]]) -> str:
    """Prometheus' text format of the latest watch values: ``lockgate_watch{column=...}`` and when
    each was measured (``lockgate_watch_measured_at_seconds``), for the columns of ``watch_columns``."""
    known = [c for c in watch_columns() if c in latest]
    lines = [
        f"# HELP {WATCH_METRIC} Latest value a watch check recorded (drift score and threshold, online quality, "
        "the gate's scores), by dashboard column.",
        f"# TYPE {WATCH_METRIC} gauge",
        *(f'{WATCH_METRIC}{{column="{c}"}} {latest[c]["value"]!r}' for c in known),
        f"# HELP {WATCH_METRIC}_measured_at_seconds When that value was measured (Unix time).",
        f"# TYPE {WATCH_METRIC}_measured_at_seconds gauge",
        *(f'{WATCH_METRIC}_measured_at_seconds{{column="{c}"}} {latest[c]["at"]!r}' for c in known),
    ]
    return "\n".join(lines) + "\n"


def prometheus_values(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """The serving series of the last window from Prometheus' HTTP API, named as the panels' columns.

    Raises:
        TransientError: Prometheus did not answer (not running, or not reachable).
    """
    values: dict[str, float] = {}
    for series, column in SERVING_SERIES.items():
        for result in _query(url, series, timeout_s):
            variant = result["metric"].get("variant")
            if variant:
                values[f"{variant}_{column}"] = float(result["value"][1])
    waiting = [float(r["value"][1]) for r in _query(url, QUEUE_SERIES, timeout_s)]
    if waiting:
        values[QUEUE_COLUMN] = sum(waiting)
    return values


def _query(url: str, expr: str, timeout_s: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query?{query}", timeout=timeout_s) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TransientError(f"monitoring.prometheus_url: {url} did not answer ({exc})") from exc
    if body.get("status") != "success":
        raise TransientError(f"monitoring.prometheus_url: {url} refused {expr}: {body.get('error')}")
    return list(body["data"]["result"])

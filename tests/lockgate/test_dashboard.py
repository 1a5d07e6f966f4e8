"""The dashboard's Evidently adapter on a real local Evidently workspace: one project per deployment
with its panels made once, each record a snapshot of its finite values at its time, and every
Evidently error translated. (The UI serving it, in a real browser: tests/lockgate/serving/test_gateway_vllm.py.)"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lockgate.dashboard import PANELS, EvidentlyDashboard, NoDashboard, error_map, open_dashboard, prometheus_values
from lockgate.errors import ConfigError, LockgateError, TransientError


def snapshots(folder: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/snapshots/*.json"))]


def test_records_land_as_snapshots_of_one_project_whose_panels_are_made_once(tmp_path: Path) -> None:
    from evidently.ui.workspace import Workspace

    folder = tmp_path / "evidently"
    first = EvidentlyDashboard(folder, "quillstone-qa")
    at = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    first.record(
        "query-drift", {"production_query_drift_score": 0.2003, "production_query_drift_threshold": 0.0075}, at
    )
    again = EvidentlyDashboard(folder, "quillstone-qa")  # the next check, in another process
    again.record("serving", {"production_p95_latency_s": 1.5, "canary_p95_latency_s": float("nan")}, at + timedelta(1))
    again.record("serving", {"canary_p95_latency_s": float("nan")})  # nothing finite: nothing recorded

    projects = Workspace(str(folder)).list_projects()
    assert [p.name for p in projects] == ["quillstone-qa"], "one project per deployment"
    assert again.project_id() == first.project_id()
    panels = Workspace(str(folder)).get_dashboard(first.project_id()).panels
    assert [p.title for p in panels] == [p.title for p in PANELS], "the panels, made once"
    kept = snapshots(folder)
    assert len(kept) == 2
    text = json.dumps(kept)
    assert "production_query_drift_score" in text and "0.2003" in text and "production_p95_latency_s" in text
    assert "canary_p95_latency_s" not in text, "a value that is not finite is not drawn"


def test_off_records_nothing(tmp_path: Path) -> None:
    dashboard = open_dashboard("off", tmp_path / "evidently", "quillstone-qa")
    assert isinstance(dashboard, NoDashboard)
    dashboard.record("serving", {"production_p95_latency_s": 1.0})
    assert not (tmp_path / "evidently").exists()
    with pytest.raises(ConfigError, match=r"monitoring\.dashboard: unknown dashboard 'grafana'"):
        open_dashboard("grafana", tmp_path, "x")


def test_every_evidently_error_is_translated(tmp_path: Path) -> None:
    from evidently.errors import EvidentlyError

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    import evidently.ui.service.errors  # noqa: F401 (its exceptions join the hierarchy)

    table = error_map()
    for cls in {EvidentlyError} | subclasses(EvidentlyError):
        assert any(issubclass(cls, known) and issubclass(kind, LockgateError) for known, kind in table.items()), cls

    # An unwritable workspace (a file where the folder should be) is one clear error, not a traceback.
    (tmp_path / "evidently").write_text("not a folder")
    with pytest.raises(LockgateError, match=r"dashboard .*evidently"):
        EvidentlyDashboard(tmp_path / "evidently", "quillstone-qa").record("serving", {"queue_depth": 1.0})


def test_a_prometheus_that_does_not_answer_is_a_transient_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match=rf"monitoring.prometheus_url: http://127.0.0.1:{port} did not answer"):
        prometheus_values(f"http://127.0.0.1:{port}", timeout_s=2)


def test_every_record_keeps_the_latest_values_which_monitor_serves_to_prometheus(tmp_path: Path) -> None:
    """Whichever dashboard is chosen, each column's latest finite value is kept (``latest.json``) and
    ``lockgate monitor``'s exporter serves it in Prometheus' text format, read back by its own parser."""
    from datetime import UTC, datetime

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from lockgate.monitoring import serve_watch_values
    from tests.lockgate.serving.conftest import free_port

    latest = tmp_path / "latest.json"
    dashboard = open_dashboard("off", tmp_path / "evidently", "quillstone-qa", latest=latest)
    first = datetime(2026, 12, 1, tzinfo=UTC)
    dashboard.record(
        "query-drift", {"production_query_drift_score": 0.02, "production_query_drift_threshold": 0.01}, first
    )
    dashboard.record("query-drift", {"production_query_drift_score": 0.03, "canary_query_drift_score": float("nan")})
    dashboard.record("serving", {"production_p95_latency_s": 1.5})  # Prometheus' own: not exported back

    port = free_port()
    server = serve_watch_values(latest, "127.0.0.1", port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
        with pytest.raises(ConfigError, match=f"cannot serve the watch values on 127.0.0.1:{port}"):
            serve_watch_values(latest, "127.0.0.1", port)
    finally:
        server.shutdown()
    samples = {
        (s.name, s.labels["column"]): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }
    assert samples[("lockgate_watch", "production_query_drift_score")] == 0.03, "the latest value"
    assert samples[("lockgate_watch", "production_query_drift_threshold")] == 0.01
    assert samples[("lockgate_watch_measured_at_seconds", "production_query_drift_threshold")] == first.timestamp()
    assert ("lockgate_watch", "canary_query_drift_score") not in samples, "a value that is not finite is not kept"
    assert not any("p95" in column for _, column in samples), samples
    assert not (tmp_path / "evidently").exists(), "off still draws nothing"

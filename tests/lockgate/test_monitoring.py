"""The shipped Prometheus rules and the rendered configuration, checked and unit-tested with promtool;
the Grafana dashboard reads only series the rules record and the watch values `lockgate monitor` exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lockgate.errors import ConfigError
from lockgate.monitoring import (
    ENGINE_JOB,
    GATEWAY_JOB,
    PANELS,
    RULES,
    WATCH_JOB,
    grafana_dashboard,
    prometheus_config,
    target,
)
from tests.conftest import needs_prometheus, prometheus_binaries

PROMTOOL = prometheus_binaries()[1]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


@needs_prometheus()
def test_the_rules_check_and_their_unit_tests_pass(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(RULES), cwd=tmp_path)
    assert checked.returncode == 0 and "SUCCESS: 12 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules_test.yml", cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_prometheus()
def test_a_rule_that_alerts_too_late_fails_its_unit_test(tmp_path: Path) -> None:
    # The unit tests can fail: the same tests against rules whose error alert waits for 60% errors.
    shutil.copy(RULES.parent / "rules_test.yml", tmp_path)
    (tmp_path / "rules.yml").write_text(RULES.read_text().replace("rate5m > 0.05", "rate5m > 0.6"))
    tested = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "LockgateErrorsHigh" in tested.stdout + tested.stderr


@needs_prometheus()
def test_the_rendered_configuration_is_valid_and_scrapes_every_engine_once(tmp_path: Path) -> None:
    config = prometheus_config(
        "127.0.0.1:8300", ["http://127.0.0.1:8400", "http://127.0.0.1:8401/", "http://127.0.0.1:8400"], RULES, 5
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {GATEWAY_JOB: ["127.0.0.1:8300"], ENGINE_JOB: ["127.0.0.1:8400", "127.0.0.1:8401"]}
    watched = prometheus_config("127.0.0.1:8300", ["http://127.0.0.1:8400"], RULES, 5, watch="127.0.0.1:9109")
    assert watched["scrape_configs"][-1] == {"job_name": WATCH_JOB, "static_configs": [{"targets": ["127.0.0.1:9109"]}]}
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}


def test_a_target_without_a_port_is_refused_by_name() -> None:
    assert target("http://engine.svc:8000/v1") == "engine.svc:8000"
    with pytest.raises(ConfigError, match=r"'http://engine\.svc' is not host:port"):
        target("http://engine.svc")


def test_every_panel_reads_a_series_the_rules_record_or_a_watch_value_the_checks_record() -> None:
    from lockgate.dashboard import PANELS as EVIDENTLY_PANELS
    from lockgate.dashboard import watch_columns

    dashboard = json.loads(json.dumps(grafana_dashboard()))  # what --grafana writes: plain JSON
    panels = dashboard["panels"]
    serving = [p for p in panels if "lockgate_watch" not in p["targets"][0]["expr"]]
    watch = [p for p in panels if "lockgate_watch" in p["targets"][0]["expr"]]
    assert [p["title"] for p in serving] == list(PANELS) and len({p["id"] for p in panels}) == len(panels)
    series = {name for p in serving for name in re.findall(r"[a-z_]+:[a-z0-9_:]+|\bup\b", p["targets"][0]["expr"])}
    assert series - {"up"} <= recorded(), series - recorded()
    assert recorded() <= series, f"recorded but shown nowhere: {recorded() - series}"
    # The Evidently dashboard's panels of watch values, the same in Grafana: every column shown, each once.
    assert [p["title"] for p in watch] == [
        e.title for e in EVIDENTLY_PANELS if e.kind == "line" and any(c in watch_columns() for c, _ in e.values)
    ]
    shown = [c for p in watch for c in re.search(r'column=~"([^"]+)"', p["targets"][0]["expr"]).group(1).split("|")]  # type: ignore[union-attr]
    assert sorted(shown) == sorted(watch_columns()), "every watch column in one Grafana panel"
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels}
    assert len(positions) == len(panels), "no two panels on the same spot"

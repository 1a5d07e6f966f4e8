"""Kubernetes manifests checked against the Kubernetes API schemas, and the Dockerfiles linted,
with the real tools (kubernetes-validate, hadolint) rather than by eye."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

KUBERNETES = "1.30.0"  # the oldest minor the GPU job must run on (GKE's regular channel)
DOCKERFILES = sorted((ROOT / "infra" / "docker").glob("*.Dockerfile"))


def gpu_job(variables: dict[str, Any]) -> dict[str, Any]:
    """The finetune-gpu deployment's Job, rendered by prefect-kubernetes' own worker code."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((ROOT / "deployments" / "gpu-job-template.json").read_text())
    rendered = KubernetesWorkerJobConfiguration.from_template_and_values(template, variables)
    config = asyncio.run(rendered) if asyncio.iscoroutine(rendered) else rendered
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="finetune-test"))
    return dict(config.job_manifest)


def test_the_gpu_job_is_a_valid_kubernetes_job() -> None:
    deployment = next(
        d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "finetune-gpu"
    )
    job = gpu_job({**deployment["work_pool"]["job_variables"], "image": "lockgate-trainer:test"})
    kubernetes_validate.validate(job, KUBERNETES, strict=True)  # raises on any schema violation


def test_the_validator_rejects_a_broken_job() -> None:
    job = gpu_job({"image": "lockgate-trainer:test", "gpu_count": 1})
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "one GPU"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    # DL3008 (pin apt package versions): the images build from a Debian base chosen by build
    # argument and its own mirror; pinned versions would break whenever the mirror moves on.
    lint = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "hadolint"),
            "--no-color",
            "--failure-threshold",
            "warning",
            "--ignore",
            "DL3008",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hadolint_finds_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /tmp && apt-get install -y curl\n")
    lint = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "hadolint"), "--no-color", "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode != 0 and "DL3007" in lint.stdout, lint.stdout

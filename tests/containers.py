"""What the container tests need: a Docker engine that answers and Lockgate's images."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT, needs

HOW = "install docker.io, start dockerd and run `make images` (bash .ci/run does all three)"


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def image_tags() -> tuple[str, str, str]:
    """The app, trainer and serving images for the current lock files (scripts/images.sh --tags)."""
    out = subprocess.run([str(ROOT / "scripts" / "images.sh"), "--tags"], capture_output=True, text=True, check=True)
    app, trainer, serving = out.stdout.split()
    return app, trainer, serving


def images_built() -> bool:
    if not docker_answers():
        return False
    return all(
        subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=30).returncode == 0
        for tag in image_tags()
    )


def needs_docker() -> pytest.MarkDecorator:
    return needs(images_built(), "a Docker engine with Lockgate's images", HOW)

"""An installed Lockgate (a wheel, not the checkout) finds its settings profiles: they are package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_wheel_installed_outside_the_checkout_loads_the_shipped_profiles(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the checkout (build/, *.egg-info).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("lockgate", "flows", "tasks"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
        source,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (source / "dist").glob("lockgate-*.whl")
    shipped_files = zipfile.ZipFile(wheel).namelist()
    assert "lockgate/profiles/embedded.yaml" in shipped_files and "lockgate/prometheus/rules.yml" in shipped_files

    site = tmp_path / "site"
    installed = run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    # Run from elsewhere with only the installed copy importable (not the checkout).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKGATE_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    loaded = run(
        [
            sys.executable,
            "-c",
            "import lockgate; from lockgate.settings import load_settings, profile_path; "
            "print(lockgate.__file__); print(profile_path('embedded')); print(load_settings().vector_store.collection)",
        ],
        elsewhere,
        env,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    package_file, profile_file, collection = loaded.stdout.split()
    assert Path(package_file).is_relative_to(site) and Path(profile_file).is_relative_to(site), loaded.stdout
    assert collection == "quillstone_chunks"  # the embedded profile's value (the default is lockgate_chunks)

    helped = run([sys.executable, "-m", "flows", "--help"], elsewhere, env)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: lockgate"), helped.stderr[-2000:]
    listed = run([sys.executable, "-m", "flows", "settings", "--list"], elsewhere, env)
    shipped = sorted(p.stem for p in (ROOT / "lockgate" / "profiles").glob("*.yaml"))
    assert "embedded" in shipped
    assert listed.returncode == 0 and listed.stdout.split() == shipped, listed.stdout + listed.stderr
    bad = run([sys.executable, "-m", "flows", "--profile", "../x", "settings"], elsewhere, env)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout + bad.stderr
    known = ", ".join(shipped)
    assert bad.stderr.strip().splitlines() == [f"error: --profile '../x' is not a profile; known profiles: {known}"]

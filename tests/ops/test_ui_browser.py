"""The Prefect UI in a real browser: a user starts the release from its deployment's parameter
form with a changed value, watches the run finish and reads the release summary artifact; a
value out of bounds is refused with the field named. Headless Chromium (Debian's package)
driven by Playwright; the server runs on PostgreSQL (tests/live.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs
from tests.live import PREFECT, TERMINAL, api, apply_environment, stop

CHROMIUM = os.environ.get("LOCKGATE_CHROMIUM") or shutil.which("chromium") or ""
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    needs(bool(CHROMIUM), "Chromium", "bash .ci/provision.d/30-chromium.sh (Debian's chromium package)"),
]


def test_release_started_from_the_ui_form_finishes_with_its_summary(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, env = server
    apply_environment(env)
    deployments = api(url, "/deployments/filter", {})
    release = next(d for d in deployments if d["name"] == "release")
    for other in deployments:  # their schedules (data-watch every 15 minutes) must not crowd the worker
        if other["id"] != release["id"]:
            api(url, f"/deployments/{other['id']}", {"paused": True}, method="PATCH")
    ui = url.removesuffix("/api")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "lockgate-cpu"],
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            try:
                page.goto(f"{ui}/deployments/deployment/{release['id']}")
                page.get_by_role("button", name="Run", exact=True).click()
                page.get_by_text("Custom run").click()
                # max_steps is `int | None`: the form shows a type switch, None chosen; pick int.
                page.get_by_text("int", exact=True).first.click()
                steps = page.get_by_role("spinbutton")  # the form's one number field

                # Out of bounds (max_steps >= 1): refused at the field, and no run is created.
                steps.fill("0")
                page.get_by_role("button", name="Submit").click()
                # The form refuses it at the field itself (the API would answer 409 naming params.max_steps).
                refused_field = page.locator(".schema-form-property.p-label--failed", has_text="Max Steps")
                expect(refused_field).to_contain_text("0 is not valid")
                page.wait_for_timeout(2000)
                refused = wait_for_run(url, release["id"], lambda r: r["parameters"]["params"].get("max_steps") == 0, 0)
                assert refused is None, "a run was created with max_steps=0"

                steps.fill("2")  # a changed value: two training steps instead of the profile's
                page.get_by_role("button", name="Submit").click()
                run = wait_for_run(url, release["id"], lambda r: r["parameters"]["params"].get("max_steps") == 2)
                assert run is not None, "the form's run never reached the server"
                # The run's page re-renders its live logs all along: on two cores that took a fair
                # share of the CPU the release trains with. The user comes back when it is done.
                page.goto("about:blank")
                deadline = time.monotonic() + 1800  # a release; minutes when the machine is busy
                while api(url, f"/flow_runs/{run['id']}")["state_type"] not in TERMINAL:
                    assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-4000:]
                    time.sleep(5)
                page.goto(f"{ui}/runs/flow-run/{run['id']}")
                state = api(url, f"/flow_runs/{run['id']}")["state_name"]
                # A two-step candidate may well be rejected: the run then fails, with its summary.
                assert state in ("Completed", "Failed"), (tmp_path / "worker.log").read_text()[-4000:]
                header = page.locator(".flow-run-header, .page-heading").first
                expect(header.get_by_text(state, exact=True).first).to_be_visible()
                page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
                expect(page.get_by_text("release-summary").first).to_be_visible()
                page.get_by_text("release-summary").first.click()
                expect(page.get_by_role("heading", name="Release:").first).to_be_visible()
            except Exception:
                page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
                (tmp_path / "ui.html").write_text(page.content())
                raise
            finally:
                browser.close()
    finally:
        stop(worker)


def wait_for_run(url: str, deployment_id: str, matches: object, timeout_s: float = 60) -> dict[str, Any] | None:
    """The first run of the deployment that ``matches``, waiting up to ``timeout_s``; None if none."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
        found = [r for r in runs if matches(r)]  # type: ignore[operator]
        if found or time.monotonic() > deadline:
            return found[0] if found else None  # type: ignore[no-any-return]
        time.sleep(1)

"""A live Prefect server for tests, on a real PostgreSQL, as in production.

PostgreSQL is started once per session in a temporary folder (``initdb`` + ``pg_ctl``, trust
authentication on 127.0.0.1 only); every test gets a fresh database and its own Prefect
server on it, stopped after. Shared by every live test (deployments, work pools, containers,
the UI). The first server of the session migrates a template database; each test's database
is a copy of it (``createdb -T``), so its server skips Prefect's migrations.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

PREFECT = str(ROOT / ".venv" / "bin" / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PG_HOW = "install PostgreSQL's server (bash .ci/provision.d/20-postgres.sh, or apt-get install postgresql)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(url: str, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    """One JSON call to the Prefect API (POST with a body, GET without)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def events(url: str, name: str, *, timeout: float = 60) -> list[dict[str, Any]]:
    """The server's events named ``name``, waiting up to ``timeout`` seconds for the first one:
    the server persists events in batches, so one emitted just before a run ends can reach the
    filter endpoint seconds after the run is COMPLETED."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = api(url, "/events/filter", {"filter": {"event": {"name": [name]}}})["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def apply_environment(env: dict[str, str]) -> str:
    """Run `deployments/apply.sh` against the server ``env`` points at (work pools, limits,
    deployments, automations), as an operator does; returns what it printed."""
    done = subprocess.run(
        [str(ROOT / "deployments" / "apply.sh")], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def finetune_runs(url: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The runs of a finetune deployment (those a release with training.launcher=deployment
    starts), created since ``since`` if given, oldest first."""
    runs = api(url, "/flow_runs/filter", {})
    return sorted(
        (
            r
            for r in runs
            if r["deployment_id"]
            and "training" in r["parameters"].get("params", {})
            and (since is None or datetime.fromisoformat(r["created"]) >= since)
        ),
        key=lambda r: r["created"],
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    # Prefect's server and workers may sit on SIGTERM; two SIGINTs stop them promptly.
    for _ in range(2):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (``pg_ctl`` on the PATH, or Debian's place)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return debian[-1].parent if debian else None


def _missing(what: str, how: str) -> None:
    """Skip on a laptop without ``what``; in CI fail (tests.conftest.needs, for fixtures)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI: {how}")
    pytest.skip(f"{what} is missing: {how}")


@dataclass
class Postgres:
    """A PostgreSQL cluster on 127.0.0.1 that tests create databases in."""

    bin: Path
    port: int
    user: str = "lockgate"

    def create_database(self, template: str | None = None, name: str | None = None) -> str:
        """A fresh database, empty or a copy of ``template``; returns its SQLAlchemy URL for Prefect (asyncpg)."""
        name = name or f"prefect_{uuid.uuid4().hex[:12]}"
        copy = ["-T", template] if template else []
        cmd = [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, *copy, name]
        for _ in range(20):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            # A template is copied only without connections: a server just stopped may hold one for a moment.
            if done.returncode == 0 or "being accessed by other users" not in done.stderr:
                break
            time.sleep(0.5)
        assert done.returncode == 0, f"createdb {name}: {done.stderr}"
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{name}"


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: the Debian package's `postgres` user runs it.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL for the session: initdb into a temporary folder, started, removed after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        _missing("PostgreSQL", PG_HOW)
    assert bin_dir is not None
    folder = Path(tempfile.mkdtemp(prefix="lockgate-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "lockgate", "-E", "UTF8"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Throw-away data: no fsync. The socket goes into the folder, not /var/run/postgresql.
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    started = subprocess.run(
        _as_postgres_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-o", options, "start"]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        log = (folder / "postgres.log").read_text() if (folder / "postgres.log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {started.stderr}{log[-2000:]}")
    try:
        yield Postgres(bin_dir, port)
    finally:
        subprocess.run(
            _as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"Prefect server did not start: {log.read_text()[-2000:]}")
            time.sleep(1)


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """``prefect server start`` on ``env``'s database, healthy; the caller stops it."""
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api", proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def prefect_template(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database a Prefect server has started on once (schema migrated, block types registered),
    stopped: each test's server starts on a copy of it instead of migrating an empty one."""
    name = "prefect_template"
    folder = tmp_path_factory.mktemp("prefect-template")
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.create_database(name=name),
    }
    stop(start_server(env, free_port(), folder / "server.log"))
    return name


@contextmanager
def live_server(postgres: Postgres, template: str, folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Prefect server (API and UI) on a fresh PostgreSQL database (a copy of the migrated
    ``template``), its home, state folder and log in ``folder``; yields its API URL and the
    environment clients, workers and flows use to reach it. Stopped after, with what its runs
    left running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": url,
        "PYTHONPATH": str(ROOT),
        "LOCKGATE_PROJECT_ROOT": str(ROOT),
        "LOCKGATE_HOME": str(folder / "home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    (folder / "prefect").mkdir()
    # Only the server reads it; tests read it to look into the database itself.
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres.create_database(template=template)
    proc = start_server(env, port, folder / "server.log")
    try:
        yield url, env
    finally:
        stop(proc)
        kill_leftovers(folder)


@pytest.fixture
def server(postgres: Postgres, prefect_template: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A live Prefect server of this test's own (:func:`live_server` in ``tmp_path``)."""
    with live_server(postgres, prefect_template, tmp_path) as live:
        yield live


def kill_leftovers(tmp_path: Path) -> list[int]:
    """Kill what a live test's runs started and left running on purpose: a promotion triggers
    the deploy flow, whose vLLM engine keeps serving after the flow ends (its model lies under
    the test's folder). Nothing a test started may outlive it."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp_path) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except ProcessLookupError:
                pass
    return killed

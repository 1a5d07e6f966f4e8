"""A real Pinecone-API server for tests: ``needledb`` on 127.0.0.1, started once per session.

needledb speaks the Pinecone data plane the SDK uses; its control plane does not match SDK 10,
so indexes are found and created over needledb's own REST (``NeedleControlPlane``), which is
what ``PineconeStore``'s control-plane seam is for.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from lockgate.stores.pinecone import PineconeStore
from tests.conftest import needs

NEEDLEDB = shutil.which("needledb") or str(Path(sys.executable).parent / "needledb")
HAVE_NEEDLEDB = Path(NEEDLEDB).is_file()
needs_needledb = needs(HAVE_NEEDLEDB, "the needledb server", "it comes with the app environment (make setup)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NeedleServer:
    """A running needledb: its base URL and the API key it accepts."""

    url: str
    key: SecretStr

    def _request(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Api-Key": self.key.get_secret_value(), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read() or b"{}"))

    def control_plane(self) -> NeedleControlPlane:
        return NeedleControlPlane(self)

    def store(self, index_name: str, namespace: str, **kwargs: object) -> PineconeStore:
        """A ``PineconeStore`` on this server that finds (or creates) ``index_name`` through needledb's REST."""
        return PineconeStore(None, namespace, self.key, self.control_plane(), index_name=index_name, **kwargs)  # type: ignore[arg-type]


class NeedleControlPlane:
    """``PineconeControlPlane`` over needledb's own REST (``/indexes``)."""

    def __init__(self, server: NeedleServer) -> None:
        self.server = server
        self.created: list[tuple[str, int, str]] = []

    def index_host(self, name: str) -> str | None:
        try:
            return str(self.server._request("GET", f"/indexes/{name}")["host"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def create_index(self, name: str, dim: int, metric: str) -> str:
        self.created.append((name, dim, metric))
        return str(self.server._request("POST", "/indexes", {"name": name, "dimension": dim, "metric": metric})["host"])


def start_needledb(data: Path) -> tuple[subprocess.Popen[bytes], NeedleServer]:
    key = SecretStr(secrets.token_hex(16))
    port = _free_port()
    env = {**os.environ, "NEEDLEDB_API_KEY": key.get_secret_value()}
    log = (data / "needledb.log").open("wb")
    proc = subprocess.Popen(
        [
            NEEDLEDB,
            "serve",
            "--data",
            str(data / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = NeedleServer(f"http://127.0.0.1:{port}", key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"needledb exited with {proc.returncode}: {(data / 'needledb.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=1):
                return proc, server
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("needledb did not answer /health within 60 s")


@pytest.fixture(scope="session")
def needledb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeedleServer]:
    """One needledb server for the test session, on a free port of 127.0.0.1."""
    if not HAVE_NEEDLEDB:
        pytest.fail(f"needledb is not installed at {NEEDLEDB}")
    data = tmp_path_factory.mktemp("needledb")
    proc, server = start_needledb(data)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

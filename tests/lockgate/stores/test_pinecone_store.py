"""The Pinecone adapter against a real Pinecone-API server (needledb on 127.0.0.1).

A small forwarding proxy sits between the SDK and the server where a test needs to see the
wire: it measures every upsert request's bytes and records, and injects 429/503 answers.
Live tests against Pinecone itself run only when PINECONE_API_KEY is set.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.settings import VectorStoreSettings
from lockgate.stores import StoredChunk, open_store
from lockgate.stores.pinecone import (
    MAX_REQUEST_BYTES,
    MAX_UPSERT_RECORDS,
    PineconeStore,
    SdkControlPlane,
    _error_table,
    translate_pinecone_error,
    upsert_batches,
)
from tests.lockgate.stores.pinecone_server import NeedleControlPlane, NeedleServer, needledb, needs_needledb  # noqa: F401

DIM = 384


def _chunks(n: int, text_bytes: int = 600) -> tuple[list[StoredChunk], np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        StoredChunk(
            f"doc{i // 10}-{i:05d}", f"sha256:{i:064x}", f"docs/doc{i // 10}.md", "Title", "w" * text_bytes, "emb"
        )
        for i in range(n)
    ]
    return chunks, vectors


# --- pure rules --------------------------------------------------------------------------


def _instance(cls: type[Exception]) -> Exception:
    """An instance of any SDK exception class, whatever its constructor asks for."""
    values = {"message": "boom", "status_code": 500, "index_name": "idx", "name": "idx", "state": "Terminated"}
    kwargs = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        kwargs[p.name] = values.get(p.name, "x")
    return cls(**kwargs)


def test_every_pinecone_exception_type_is_mapped() -> None:
    import pinecone.errors as sdk_errors

    exported = {getattr(sdk_errors, n) for n in sdk_errors.__all__}
    classes = {c for c in exported if isinstance(c, type) and issubclass(c, Exception)}

    def walk(c: type[Exception]) -> None:
        for sub in c.__subclasses__():
            classes.add(sub)
            walk(sub)

    walk(sdk_errors.PineconeError)
    table = _error_table()
    missing = sorted(c.__name__ for c in classes if c not in table)
    assert not missing, f"unmapped Pinecone exception types: {missing}"
    for cls in classes:
        mapped = translate_pinecone_error(_instance(cls), "t")
        assert isinstance(mapped, LockgateError) and type(mapped) is table[cls], cls
    assert isinstance(translate_pinecone_error(_instance(sdk_errors.RateLimitError)), TransientError)
    assert isinstance(translate_pinecone_error(_instance(sdk_errors.ServiceError)), TransientError)
    assert isinstance(translate_pinecone_error(_instance(sdk_errors.UnauthorizedError)), ConfigError)
    assert isinstance(translate_pinecone_error(_instance(sdk_errors.PayloadTooLargeError)), StageError)
    assert translate_pinecone_error(KeyError("not the SDK's")) is None


def test_upsert_batches_respect_count_and_bytes() -> None:
    records = [{"id": f"r{i}", "values": [0.123456789] * 8, "metadata": {"t": "x" * (i % 50)}} for i in range(250)]
    batches = list(upsert_batches(records, "ns", max_records=40, max_bytes=4000))
    assert [r for b in batches for r in b] == records, "nothing lost, nothing reordered"
    for b in batches:
        body = json.dumps({"vectors": b, "namespace": "ns"}, separators=(",", ":")).encode()
        assert len(b) <= 40 and len(body) <= 4000
    assert any(len(b) < 40 for b in batches[:-1]), "bytes, not only the count, cut some batches"
    with pytest.raises(StageError, match="alone is"):
        list(upsert_batches([{"id": "big", "values": [1.0] * 2000}], "ns", max_bytes=1000))


def test_the_key_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = VectorStoreSettings(backend="pinecone", pinecone_api_key_env="LOCKGATE_TEST_PINECONE_KEY")
    monkeypatch.delenv("LOCKGATE_TEST_PINECONE_KEY", raising=False)
    with pytest.raises(ConfigError, match="LOCKGATE_TEST_PINECONE_KEY"):
        open_store("pinecone", "http://127.0.0.1:9/indexes/x", "ns", settings)
    monkeypatch.setenv("LOCKGATE_TEST_PINECONE_KEY", "pc-secret-value-123")
    store = open_store("pinecone", "http://127.0.0.1:9/indexes/x", "ns", settings)
    assert isinstance(store, PineconeStore)
    assert "pc-secret-value-123" not in repr(vars(store)) and "pc-secret-value-123" not in str(settings.model_dump())


def test_store_uris_must_fit_the_backend() -> None:
    with pytest.raises(ConfigError, match="milvus-lite takes a file path"):
        open_store("milvus-lite", "http://127.0.0.1:19530", "c")
    with pytest.raises(ConfigError, match="milvus needs a server URL"):
        open_store("milvus", "/tmp/x.db", "c")
    with pytest.raises(ConfigError, match="unknown backend"):
        open_store("qdrant", "x", "c")


# --- against needledb ----------------------------------------------------------------------


class WireProxy:
    """Forwards HTTP to needledb; measures upsert requests; answers ``fail`` statuses first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.upserts: list[tuple[int, int]] = []  # (bytes, records) per upsert request that reached the server
        self.fail: list[int] = []  # statuses to answer the next upserts with, in order
        self.failed: list[int] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/vectors/upsert"):
                    if proxy.fail:
                        status = proxy.fail.pop(0)
                        proxy.failed.append(status)
                        payload = json.dumps({"error": {"code": "UNAVAILABLE", "message": "injected"}}).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        if status == 429:
                            self.send_header("Retry-After", "0")
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    proxy.upserts.append((len(body), len(json.loads(body)["vectors"])))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body or None, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as exc:
                    status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied(needledb: NeedleServer) -> Iterator[tuple[WireProxy, PineconeStore]]:  # noqa: F811
    name = f"p-{uuid.uuid4().hex[:12]}"
    NeedleControlPlane(needledb).create_index(name, DIM, "cosine")
    proxy = WireProxy(needledb.url)
    store = PineconeStore(
        f"{proxy.url}/indexes/{name}", "docs", needledb.key, NeedleControlPlane(needledb), base_delay_s=0.01
    )
    yield proxy, store
    proxy.close()


@needs_needledb
def test_upserts_stay_within_pinecone_limits_on_the_wire(proxied: tuple[WireProxy, PineconeStore]) -> None:
    proxy, store = proxied
    chunks, vectors = _chunks(2500)
    store.ensure_collection(DIM)
    store.upsert(chunks, vectors)
    assert sum(n for _, n in proxy.upserts) == 2500 and len(proxy.upserts) > 3
    assert all(size <= MAX_REQUEST_BYTES and n <= MAX_UPSERT_RECORDS for size, n in proxy.upserts), proxy.upserts
    assert max(size for size, _ in proxy.upserts) > MAX_REQUEST_BYTES * 0.8, "batches are filled, not tiny"
    assert store.count() == 2500
    manifest = store.manifest()
    assert manifest == {c.chunk_id: c.content_digest for c in chunks}
    hits = store.search(vectors[:2], 1)
    assert [h[0].chunk_id for h in hits] == [chunks[0].chunk_id, chunks[1].chunk_id]
    assert hits[0][0].doc == "docs/doc0.md" and hits[0][0].text == "w" * 600
    store.delete([c.chunk_id for c in chunks[:1500]])
    assert store.count() == 1000


def needledb_of(store: PineconeStore) -> NeedleServer:
    return store._control.server  # type: ignore[attr-defined,no-any-return]


@needs_needledb
def test_rate_limits_and_server_errors_are_retried_with_backoff(proxied: tuple[WireProxy, PineconeStore]) -> None:
    proxy, store = proxied
    chunks, vectors = _chunks(20)
    store.ensure_collection(DIM)
    # More failures in a row than the SDK's own transport retries (3): the adapter's backoff finishes the job.
    proxy.fail = [429, 429, 503, 503, 429, 502]
    store.upsert(chunks, vectors)
    assert proxy.failed == [429, 429, 503, 503, 429, 502] and store.count() == 20
    proxy.fail = [503] * 100
    impatient = PineconeStore(store.host, "docs", store._api_key, NeedleControlPlane(needledb_of(store)), attempts=2)
    with pytest.raises(TransientError, match="ServiceError 503"):
        impatient.upsert(chunks, vectors)
    assert 2 <= len(proxy.failed) - 6 <= 8, "two attempts of the adapter, each retried by the SDK's transport"


@needs_needledb
def test_permanent_errors_are_config_errors_naming_the_fix(needledb: NeedleServer) -> None:  # noqa: F811
    name = f"p-{uuid.uuid4().hex[:12]}"
    host = NeedleControlPlane(needledb).create_index(name, DIM, "cosine")
    wrong_key = PineconeStore(host, "docs", SecretStr("not-the-key"), NeedleControlPlane(needledb))
    with pytest.raises(ConfigError, match=r"401.*pinecone_api_key_env"):
        wrong_key.manifest()
    other_dim = PineconeStore(host, "docs", needledb.key, NeedleControlPlane(needledb))
    with pytest.raises(ConfigError, match="holds 384-d vectors, the embedder makes 8-d"):
        other_dim.ensure_collection(8)


@needs_needledb
def test_index_is_created_through_the_control_plane_once(
    needledb: NeedleServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = NeedleControlPlane(needledb)
    name = f"p-{uuid.uuid4().hex[:12]}"
    store = PineconeStore(None, "a", needledb.key, control, index_name=name)
    assert store.manifest() == {} and control.created == [], "reading an absent index creates nothing"
    chunks, vectors = _chunks(3)
    with caplog.at_level(logging.DEBUG):
        store.upsert(chunks, vectors)
        PineconeStore(None, "b", needledb.key, control, index_name=name).upsert(chunks[:1], vectors[:1])
    assert control.created == [(name, DIM, "cosine")]
    assert needledb.key.get_secret_value() not in caplog.text, "the key is never logged"
    a, b = (
        PineconeStore(None, "a", needledb.key, control, index_name=name),
        PineconeStore(None, "b", needledb.key, control, index_name=name),
    )
    assert (a.count(), b.count()) == (3, 1), "one namespace per collection"


# --- live Pinecone (optional: only with a key) ----------------------------------------------

LIVE_KEY = os.environ.get("PINECONE_API_KEY", "")


@pytest.mark.slow
@pytest.mark.skipif(
    not LIVE_KEY, reason="live Pinecone test: set PINECONE_API_KEY to run it (it creates and deletes an index)"
)
def test_live_pinecone_serverless_round_trip(tmp_path: Path) -> None:
    key = SecretStr(LIVE_KEY)
    control = SdkControlPlane(
        key, os.environ.get("PINECONE_CLOUD", "aws"), os.environ.get("PINECONE_REGION", "us-east-1")
    )
    name = f"lockgate-test-{uuid.uuid4().hex[:8]}"
    store = PineconeStore(None, "live", key, control, index_name=name)
    try:
        chunks, vectors = _chunks(1200)
        store.upsert(chunks, vectors)
        import time

        deadline = time.monotonic() + 120  # serverless reads are eventually consistent
        while store.count() < 1200 and time.monotonic() < deadline:
            time.sleep(2)
        assert store.manifest() == {c.chunk_id: c.content_digest for c in chunks}
    finally:
        from pinecone import Pinecone

        Pinecone(api_key=LIVE_KEY).delete_index(name)


def test_the_sdk_control_plane_creates_a_serverless_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's control plane cannot be served locally (needledb's does not parse in SDK 10), so
    this checks what the seam asks the SDK for; the live test runs it against Pinecone."""
    import pinecone
    from pinecone import ServerlessSpec

    calls: list[tuple[str, object]] = []

    class Described:
        host = "https://docs-abc.svc.aped-1234.pinecone.io"

    class RecordingPinecone:
        def __init__(self, api_key: str, host: str | None = None) -> None:
            calls.append(("key", api_key))
            self.indexes: set[str] = set()

        def has_index(self, name: str) -> bool:
            calls.append(("has_index", name))
            return name in made

        def describe_index(self, name: str) -> Described:
            calls.append(("describe_index", name))
            return Described()

        def create_index(self, **kwargs: object) -> Described:
            calls.append(("create_index", kwargs))
            made.add(str(kwargs["name"]))
            return Described()

    made: set[str] = set()
    monkeypatch.setattr(pinecone, "Pinecone", RecordingPinecone)
    control = SdkControlPlane(SecretStr("k-123"), "gcp", "europe-west4")
    assert control.index_host("docs") is None
    assert control.create_index("docs", 384, "cosine") == Described.host
    assert control.index_host("docs") == Described.host
    created = next(kw for op, kw in calls if op == "create_index")
    assert isinstance(created, dict) and created["dimension"] == 384 and created["metric"] == "cosine"
    spec = created["spec"]
    assert isinstance(spec, ServerlessSpec) and (spec.cloud, spec.region) == ("gcp", "europe-west4")
    assert ("key", "k-123") in calls

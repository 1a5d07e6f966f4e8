"""The refresh suite, run against every store: Milvus Lite and Pinecone (on a local needledb).

Add, change, delete, no-op, a store that fails 20% of its writes at random, and a process
killed mid-refresh: after reruns the store holds exactly one vector per current chunk,
nothing stale, nothing missing (ids and digests compared).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from lockgate.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.corpus import Chunk, load_corpus, split_markdown
from lockgate.digest import digest_json
from lockgate.errors import ConfigError, DataError, TransientError
from lockgate.refresh import apply_refresh, encode_here, refresh_plan, vector_digest
from lockgate.stores import Hit, StoredChunk, VectorStore
from lockgate.stores.milvus import MilvusStore
from tests.conftest import EXAMPLES, ROOT
from tests.lockgate.stores.pinecone_server import NeedleServer, needledb, needs_needledb  # noqa: F401 (fixture)

DOC = "# Widget\n\nThe widget spins.\n\n## Power\n\nIt uses 5 volts. It draws 1 amp.\n"


def test_split_markdown_titles_paragraphs_and_stable_ids() -> None:
    chunks = split_markdown("w.md", DOC, max_chars=600)
    assert [(c.title, c.text) for c in chunks] == [
        ("Widget", "The widget spins."),
        ("Widget / Power", "It uses 5 volts. It draws 1 amp."),
    ]
    again = split_markdown("w.md", DOC.replace("5 volts", "6 volts"), max_chars=600)
    assert [c.chunk_id for c in again] == [c.chunk_id for c in chunks]
    assert again[1].content_digest != chunks[1].content_digest


def test_long_paragraphs_are_cut_at_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    pieces = split_markdown("d.md", text, max_chars=120)
    assert all(len(c.text) <= 120 for c in pieces) and len(pieces) > 3
    assert " ".join(c.text for c in pieces) == text


def test_plan_adds_updates_deletes_and_counts_unchanged() -> None:
    a, b, c = (Chunk(f"id{i}", "d.md", "", f"text {i}") for i in range(3))
    stored = {"id0": vector_digest(a, "m"), "id1": "sha256:old", "gone": "sha256:x"}
    plan = refresh_plan([a, b, c], stored, "m")
    assert [x.chunk_id for x in plan.to_add] == ["id2"]
    assert [x.chunk_id for x in plan.to_update] == ["id1"]
    assert plan.to_delete == ["gone"] and plan.unchanged == 1 and plan.stored == 3
    assert refresh_plan([a], {"id0": vector_digest(a, "m")}, "m").is_noop
    assert [x.chunk_id for x in refresh_plan([a], {"id0": vector_digest(a, "m")}, "other-model").to_update] == ["id0"]


def test_corpus_errors_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "missing", 600)
    with pytest.raises(DataError, match="holds no documents"):
        load_corpus(tmp_path, 600)
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match=r"bad\.md: not UTF-8"):
        load_corpus(tmp_path, 600)


class HashEmbedder:
    """Deterministic bag-of-words vectors: enough to test the store without loading a model."""

    dim = 32

    def __init__(self, name: str = "hash-test") -> None:
        self.name = name
        self.calls: list[int] = []

    @property
    def identity(self) -> str:
        return digest_json({"hash-embedder": self.name, "dim": 32})

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class UnusableEmbedder(HashEmbedder):
    """Fails if a refresh touches the model at all (its identity comes from files, not the model)."""

    @property
    def dim(self) -> int:  # type: ignore[override]
        raise AssertionError("the embedder was loaded")


class UnusableStreamingEmbedder(UnusableEmbedder):
    """As ``UnusableEmbedder``, with every member a streaming embedder has."""

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        raise AssertionError("the embedder was used")


def test_choosing_how_to_encode_does_not_load_the_model() -> None:
    embedder = UnusableStreamingEmbedder()
    assert encode_here(embedder) == embedder.encode_batches

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the embedder was called")


StoreFactory = Callable[[], VectorStore]
BACKENDS = ["milvus-lite", pytest.param("pinecone", marks=needs_needledb)]


@pytest.fixture(params=BACKENDS)
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, StoreFactory, dict[str, str]]]:
    """``(backend, open a store on the test's collection, how a subprocess reaches it)``."""
    backend = request.param
    opened: list[VectorStore] = []
    if backend == "milvus-lite":
        uri = str(tmp_path / "index" / "m.db")

        def make() -> VectorStore:
            opened.append(MilvusStore(uri, "t"))
            return opened[-1]

        where = {"backend": backend, "uri": uri}
    else:
        server: NeedleServer = request.getfixturevalue("needledb")
        index = f"t-{uuid.uuid4().hex[:12]}"

        def make() -> VectorStore:
            # Fast backoff: the retry policy is the same, the test need not wait for it.
            opened.append(server.store(index, "t", base_delay_s=0.01))
            return opened[-1]

        where = {"backend": backend, "url": server.url, "key": server.key.get_secret_value(), "index": index}
    yield backend, make, where
    for vs in opened:
        vs.close()


def _corpus(tmp_path: Path, names: tuple[str, ...] = ("relay", "planner", "ledger")) -> Path:
    corpus = tmp_path / "docs"
    corpus.mkdir(exist_ok=True)
    for name in names:
        (corpus / f"{name}.md").write_text((EXAMPLES / "corpus" / f"{name}.md").read_text())
    return corpus


def assert_exact(vs: VectorStore, chunks: list[Chunk], embedder: HashEmbedder) -> None:
    """One vector per current chunk: ids and digests equal the corpus, nothing more is stored."""
    expected = {c.chunk_id: vector_digest(c, embedder.identity) for c in chunks}
    assert vs.manifest() == expected, "the index equals the corpus"
    assert vs.count() == len(expected), "exactly one vector per chunk"


def test_refresh_adds_changes_deletes_and_reruns_as_noop(
    tmp_path: Path, store: ArtifactStore, open_backend: tuple[str, StoreFactory, dict[str, str]]
) -> None:
    _, make, _ = open_backend
    corpus = _corpus(tmp_path)
    emb = HashEmbedder()
    vs = make()

    first = apply_refresh(load_corpus(corpus, 600), vs, emb, store, "", "t")
    assert first.added == first.total == 12 and emb.calls == [12]

    again = apply_refresh(load_corpus(corpus, 600), vs, UnusableEmbedder(), store, "", "t")
    assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 12)
    assert again.digest == first.digest, "a re-run embeds nothing and needs no model"

    relay = corpus / "relay.md"
    relay.write_text(relay.read_text().replace("by default", "unless told otherwise"))
    (corpus / "ledger.md").unlink()
    changed = apply_refresh(load_corpus(corpus, 600), vs, emb, store, "", "t")
    assert (changed.added, changed.updated, changed.deleted) == (0, 1, 4)
    assert emb.calls[-1] == 1
    chunks = load_corpus(corpus, 600)
    assert_exact(vs, chunks, emb)

    other = HashEmbedder("another-model")
    switched = apply_refresh(chunks, vs, other, store, "", "t")
    assert switched.updated == len(chunks) and other.calls == [len(chunks)], "a new embedder re-embeds everything"
    vs.close()
    reopened = make()
    reopened.ensure_collection(emb.dim)
    hits = reopened.search(emb.encode(["listens on port unless told otherwise closes connections idle"]), 1)
    assert hits[0][0].doc == "relay.md" and "unless told otherwise" in hits[0][0].text


class FlakyStore:
    """Fails a share of upsert/delete calls at random: before the write, or after it landed
    (the acknowledgement lost), as a dropped connection would."""

    def __init__(self, inner: VectorStore, rate: float, seed: int) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.collection = inner.collection
        self.rate = rate
        self.writes_in_process = False  # a refresh writes beside its encoder (lockgate.refresh.writer_for)
        self.rng = random.Random(seed)
        self.failures = 0

    def _maybe_fail(self, write: Callable[[], None]) -> None:
        if self.rng.random() < self.rate:
            self.failures += 1
            if self.rng.random() < 0.5:
                write()
            raise TransientError("injected: the store did not answer")
        write()

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        self._maybe_fail(lambda: self.inner.upsert(chunks, vectors))

    def delete(self, chunk_ids: list[str]) -> None:
        self._maybe_fail(lambda: self.inner.delete(chunk_ids))

    def flush(self) -> None:
        self.inner.flush()

    def ensure_collection(self, dim: int) -> None:
        self.inner.ensure_collection(dim)

    def manifest(self) -> dict[str, str]:
        return self.inner.manifest()

    def count(self) -> int:
        return self.inner.count()

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        return self.inner.search(vectors, top_k)

    def close(self) -> None:
        self.inner.close()


def _until_done(run: Callable[[], object], tries: int = 60) -> int:
    for attempt in range(1, tries + 1):
        try:
            run()
            return attempt
        except TransientError:
            continue
    raise AssertionError(f"no refresh succeeded in {tries} tries")


@pytest.mark.parametrize("in_process", [False, True], ids=["writer-thread", "in-line"])
def test_a_store_failing_20_percent_of_writes_converges(
    tmp_path: Path, store: ArtifactStore, open_backend: tuple[str, StoreFactory, dict[str, str]], in_process: bool
) -> None:
    """Both ways a refresh writes (lockgate.refresh.writer_for): beside the encoder, and in line."""
    _, make, _ = open_backend
    corpus = _corpus(tmp_path)
    emb = HashEmbedder()
    flaky = FlakyStore(make(), rate=0.2, seed=7)
    flaky.writes_in_process = in_process
    # Small batches: many writes, so failures land between acknowledged ones.
    runs = _until_done(lambda: apply_refresh(load_corpus(corpus, 600), flaky, emb, store, "", "t", batch=2))
    assert_exact(flaky, load_corpus(corpus, 600), emb)

    relay = corpus / "relay.md"
    relay.write_text(relay.read_text().replace("by default", "unless told otherwise") + "\n\nA new closing line.\n")
    (corpus / "ledger.md").unlink()
    runs += _until_done(lambda: apply_refresh(load_corpus(corpus, 600), flaky, emb, store, "", "t", batch=1))
    assert flaky.failures > 0 and runs > 2, "the injected failures happened"
    assert_exact(flaky, load_corpus(corpus, 600), emb)


@pytest.mark.parametrize("in_process", [False, True], ids=["server", "in-process"])
def test_a_store_that_writes_in_this_process_is_written_in_line(tmp_path: Path, in_process: bool) -> None:
    """Milvus Lite does its writes in this process's threads: the refresh writes between its
    batches, not beside the encoder on another thread (which took the encoder's cores)."""
    threads: list[int] = []

    class Recording(FlakyStore):
        def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
            threads.append(threading.get_ident())
            super().upsert(chunks, vectors)

    lite = MilvusStore(str(tmp_path / "m.db"), "t")
    assert lite.writes_in_process, "Milvus Lite writes in this process"
    recording = Recording(lite, rate=0.0, seed=0)
    recording.writes_in_process = in_process
    apply_refresh(
        load_corpus(_corpus(tmp_path), 600),
        recording,
        HashEmbedder(),
        LocalArtifactStore(tmp_path / "a"),
        "",
        "t",
        batch=2,
    )
    recording.close()
    assert len(threads) == 6, "12 chunks written 2 at a time"
    assert (set(threads) == {threading.get_ident()}) is in_process


def test_the_collection_is_made_while_the_first_batch_is_embedded(tmp_path: Path) -> None:
    """Making a collection is mostly waiting on the store (Milvus polls until it is loaded): it runs
    beside the first batch's encoding, and the first write waits for it."""
    first_encode = threading.Event()

    class Encoding(HashEmbedder):
        def encode(self, texts: list[str]) -> np.ndarray:
            first_encode.set()
            return super().encode(texts)

    class Slow(FlakyStore):
        def ensure_collection(self, dim: int) -> None:
            assert first_encode.wait(10), "the collection was made before anything was embedded"
            super().ensure_collection(dim)

    store = Slow(MilvusStore(str(tmp_path / "m.db"), "t"), rate=0.0, seed=0)
    chunks = load_corpus(_corpus(tmp_path), 600)
    build = apply_refresh(chunks, store, Encoding(), LocalArtifactStore(tmp_path / "a"), "", "t", batch=2)
    assert build.added == len(chunks) == store.count()
    store.close()


def test_a_collection_of_another_dimension_fails_the_refresh_before_any_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = str(tmp_path / "m.db")
    with MilvusStore(uri, "t") as other:
        other.ensure_collection(4)
    store = MilvusStore(uri, "t")
    with pytest.raises(ConfigError, match="holds 4-d vectors, the embedder makes 32-d"):
        apply_refresh(
            load_corpus(_corpus(tmp_path), 600), store, HashEmbedder(), LocalArtifactStore(tmp_path / "a"), "", "t"
        )
    assert store.count() == 0
    assert "stopped after" not in caplog.text, "nothing was written: no partial refresh to report"
    store.close()


def _open_from(where: dict[str, str]) -> VectorStore:
    if where["backend"] == "milvus-lite":
        return MilvusStore(where["uri"], "t")
    from pydantic import SecretStr

    from tests.lockgate.stores.pinecone_server import NeedleServer

    return NeedleServer(where["url"], SecretStr(where["key"])).store(where["index"], "t")


class _DieAfter(FlakyStore):
    """Kills its own process (SIGKILL: no clean-up of any kind) after ``n`` acknowledged upserts."""

    def __init__(self, inner: VectorStore, n: int) -> None:
        super().__init__(inner, rate=0.0, seed=0)
        self.left = n

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        self.inner.upsert(chunks, vectors)
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def refresh_and_die(where: dict[str, str], corpus: str, artifacts: str, after: int) -> None:
    """Run in a child process by the kill test."""
    store = _DieAfter(_open_from(where), after)
    apply_refresh(
        load_corpus(Path(corpus), 600), store, HashEmbedder(), LocalArtifactStore(Path(artifacts)), "", "t", batch=2
    )
    raise SystemExit("the refresh finished: it was meant to be killed")


def test_a_refresh_killed_mid_write_is_finished_by_the_next(
    tmp_path: Path, store: ArtifactStore, open_backend: tuple[str, StoreFactory, dict[str, str]]
) -> None:
    _, make, where = open_backend
    corpus = _corpus(tmp_path)
    code = (
        "import json, sys; from tests.lockgate.test_corpus_refresh import refresh_and_die; "
        "refresh_and_die(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], 3)"
    )
    import json

    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(where), str(corpus), str(tmp_path / "artifacts")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    vs = make()
    partial = vs.manifest()
    assert 0 < len(partial) < 12, "the child died with part of the index written"
    emb = HashEmbedder()
    rerun = apply_refresh(load_corpus(corpus, 600), vs, emb, store, "", "t")
    assert rerun.added == 12 - len(partial) and rerun.unchanged == len(partial)
    assert_exact(vs, load_corpus(corpus, 600), emb)


def test_mass_delete_is_refused_and_leaves_the_index_untouched(
    tmp_path: Path, store: ArtifactStore, open_backend: tuple[str, StoreFactory, dict[str, str]]
) -> None:
    _, make, _ = open_backend
    corpus = _corpus(tmp_path)
    emb = HashEmbedder()
    vs = make()
    apply_refresh(load_corpus(corpus, 600), vs, emb, store, "", "t")
    before = vs.manifest()
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "relay.md").write_text((corpus / "relay.md").read_text())
    with pytest.raises(ConfigError, match=r"delete 8 of the 12 vectors .*67%.*over vector_store.max_delete_share 50%"):
        apply_refresh(load_corpus(wrong, 600), vs, emb, store, "", "t")
    assert vs.manifest() == before, "a refused refresh changes nothing"
    forced = apply_refresh(load_corpus(wrong, 600), vs, emb, store, "", "t", force=True)
    assert forced.deleted == 8 and vs.count() == 4

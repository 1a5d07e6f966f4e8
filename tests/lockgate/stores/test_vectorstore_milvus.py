"""Milvus adapter rules: every pymilvus exception mapped, torn index files repaired, one client per file."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.stores import StoredChunk
from lockgate.stores.milvus import MilvusStore, _error_table, translate_milvus_error
from tests.conftest import ROOT


def test_a_flush_that_fails_beside_the_writes_is_raised_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymilvus.exceptions import MilvusException

    store = MilvusStore(str(tmp_path / "m.db"), "c")
    store.ensure_collection(4)
    monkeypatch.setattr("lockgate.stores.milvus.FLUSH_ROWS", 2)

    def broken(name: str, **kw: object) -> None:
        raise MilvusException(code=65535, message="disk quota exceeded")

    monkeypatch.setattr(store._client, "flush", broken)
    rows, vectors = _rows(3)
    store.upsert(rows, vectors)  # the flush fails in its thread
    with pytest.raises(StageError, match="flush: disk quota exceeded"):
        store.flush()
    monkeypatch.undo()
    store.close()


def test_the_server_refuses_a_value_longer_than_its_field(tmp_path: Path) -> None:
    """pymilvus' own length check is off (it walks every character of every row's strings); the
    store fits its strings to the schema, and the server still refuses one that does not fit."""
    from pymilvus.exceptions import MilvusException

    with MilvusStore(str(tmp_path / "m.db"), "c") as store:
        store.ensure_collection(4)
        row = {"id": "x", "vector": [0.1, 0.2, 0.3, 0.4], "content_digest": "d", "doc": "a", "title": "t"}
        with pytest.raises(MilvusException, match="exceeds max_length"):
            store._client.upsert("c", data=[{**row, "text": "a" * 9000}])
        long = StoredChunk("y", "d", "a.md", "t", "a" * 9000, "emb")
        store.upsert([long], np.ones((1, 4), dtype=np.float32))
        assert store.count() == 1


def test_every_pymilvus_exception_type_is_mapped() -> None:
    from pymilvus import exceptions as e

    classes = {
        obj
        for obj in vars(e).values()
        if isinstance(obj, type) and issubclass(obj, e.MilvusException) and obj.__module__ == e.__name__
    }
    table = _error_table()
    assert not sorted(c.__name__ for c in classes if c not in table), "unmapped pymilvus exception types"
    for cls in classes:
        mapped = translate_milvus_error(cls(message="boom"))
        assert isinstance(mapped, LockgateError) and type(mapped) is table[cls], cls
    assert isinstance(translate_milvus_error(e.ConnectError(message="x")), TransientError)
    assert isinstance(translate_milvus_error(e.CollectionNotExistException(message="x")), ConfigError)
    assert isinstance(translate_milvus_error(e.MilvusException(code=8, message="rate limit")), TransientError)
    assert isinstance(translate_milvus_error(e.MilvusException(message="x", retriable=True)), TransientError)
    assert isinstance(translate_milvus_error(e.ParamError(message="x")), StageError)
    assert translate_milvus_error(KeyError("x")) is None


def _rows(n: int) -> tuple[list[StoredChunk], np.ndarray]:
    return [StoredChunk(f"c{i}", f"d{i}", "doc.md", "T" * 2000, f"text {i}") for i in range(n)], np.eye(
        n, 4, dtype=np.float32
    )


def test_a_torn_index_file_from_a_killed_process_is_rebuilt(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.db")
    with MilvusStore(uri, "c") as store:
        store.ensure_collection(4)
        store.upsert(*_rows(3))
    sides = list(Path(uri).glob("collections/*/partitions/*/indexes/*.idx"))
    assert sides, "Milvus Lite wrote index side files"
    sides[0].write_bytes(sides[0].read_bytes()[:40])  # as a SIGKILL in the middle of np.save leaves it
    with MilvusStore(uri, "c") as store:
        store.ensure_collection(4)
        assert store.search(np.eye(1, 4, dtype=np.float32), 1)[0][0].chunk_id == "c0"
        assert store.count() == 3


def test_writes_are_flushed_every_flush_rows_and_on_close_not_after_each_upsert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush costs about as much for a few rows as for thousands: the store flushes once
    FLUSH_ROWS rows were written since the last one (beside the next writes: it is mostly waiting),
    and on close. (That acknowledged writes need no flush to survive a killed process:
    test_a_refresh_killed_mid_write_is_finished_by_the_next.)"""
    store = MilvusStore(str(tmp_path / "m.db"), "c")
    store.ensure_collection(4)
    flushed: list[tuple[str, str]] = []  # collection, thread
    flush = store._client.flush
    monkeypatch.setattr(
        store._client,
        "flush",
        lambda name, **kw: (flushed.append((name, threading.current_thread().name)), flush(name, **kw))[1],
    )
    monkeypatch.setattr("lockgate.stores.milvus.FLUSH_ROWS", 5)
    rows, vectors = _rows(3)
    store.upsert(rows, vectors)
    assert flushed == []
    store.upsert(rows, vectors)  # 6 rows written since the last flush: one starts beside the writes
    store.delete(["c0"])
    store.close()  # waits for it, then flushes the delete
    main = threading.current_thread().name
    assert [name for name, _ in flushed] == ["c", "c"], "one flush after FLUSH_ROWS rows, one on close"
    assert flushed[0][1] != main, "the flush after FLUSH_ROWS rows runs beside the writes"
    assert flushed[1][1] == main
    with MilvusStore(str(tmp_path / "m.db"), "c") as again:
        assert sorted(again.manifest()) == ["c1", "c2"]


def test_long_titles_fit_the_schema(tmp_path: Path) -> None:
    with MilvusStore(str(tmp_path / "m.db"), "c") as store:
        store.ensure_collection(4)
        _, vectors = _rows(2)
        store.upsert([StoredChunk("x", "d", "é" * 900, "標題" * 600, "t")], vectors[:1])
        assert store.count() == 1 and store.search(vectors[:1], 1)[0][0].title.startswith("標題")


def test_stores_on_one_file_in_one_process_share_a_client(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.db")
    a, b = MilvusStore(uri, "a"), MilvusStore(uri, "b")
    assert a._client is b._client
    a.close()
    b.ensure_collection(4)  # still open for b
    b.close()


HOLD = """
import sys, time
from lockgate.stores.milvus import MilvusStore
s = MilvusStore(sys.argv[1], "c")
s.ensure_collection(4)
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
s.close()
"""


@pytest.mark.slow
def test_a_second_process_waits_for_the_file_instead_of_failing(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, uri, "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with MilvusStore(uri, "c", lock_timeout_s=60) as store:
            waited = time.monotonic() - started
            store.ensure_collection(4)
            store.upsert(*_rows(2))
            assert store.count() == 2
        assert waited > 0.5, "it waited for the other process"
        holder.wait(timeout=30)
        with pytest.raises(TransientError, match="still in use"):
            blocker = subprocess.Popen(
                [sys.executable, "-c", HOLD, uri, "20"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                env={"PYTHONPATH": str(ROOT)},
            )
            assert blocker.stdout is not None and blocker.stdout.readline().strip() == "holding"
            try:
                MilvusStore(uri, "c", lock_timeout_s=1)
            finally:
                blocker.kill()
                blocker.wait()
    finally:
        holder.kill()
        holder.wait()


REFRESH = """
import sys
from pathlib import Path
from lockgate.corpus import load_corpus
from lockgate.refresh import apply_refresh
from lockgate.artifacts import LocalArtifactStore
from lockgate.stores import open_store
from tests.lockgate.test_corpus_refresh import HashEmbedder
store = open_store("milvus-lite", sys.argv[1], "t")
artifacts = LocalArtifactStore(Path(sys.argv[3]))
build = apply_refresh(load_corpus(Path(sys.argv[2]), 600), store, HashEmbedder(), artifacts, "", "t")
store.close()
print("refreshed", build.added, build.updated, build.deleted)
"""

EVALUATE = """
import json, sys
from lockgate.evaluate import retrieve
from lockgate.stores import open_store
from tests.lockgate.test_corpus_refresh import HashEmbedder
rows = [json.loads(line) for line in open(sys.argv[2]) if line.strip()][:20]
store = open_store("milvus-lite", sys.argv[1], "t")
found = retrieve(rows, store, HashEmbedder(), 2)
print("retrieved", len(found))
"""


@pytest.mark.slow
def test_a_refresh_and_an_evaluation_started_together_on_one_file_both_succeed(tmp_path: Path) -> None:
    from lockgate.artifacts import LocalArtifactStore
    from lockgate.corpus import load_corpus
    from lockgate.refresh import apply_refresh
    from tests.conftest import EXAMPLES
    from tests.lockgate.test_corpus_refresh import HashEmbedder

    uri = str(tmp_path / "index" / "m.db")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for doc in sorted((EXAMPLES / "corpus").glob("*.md")):
        (corpus / doc.name).write_text(doc.read_text())
    with MilvusStore(uri, "t") as seed:
        apply_refresh(load_corpus(corpus, 600), seed, HashEmbedder(), LocalArtifactStore(tmp_path / "a"), "", "t")
    first = sorted(corpus.glob("*.md"))[0]
    first.write_text(first.read_text() + "\n\nA paragraph added while the release evaluates.\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri, arg, str(tmp_path / "a")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for script, arg in ((REFRESH, str(corpus)), (EVALUATE, str(EXAMPLES / "data" / "qa.jsonl")))
    ]
    outs = [p.communicate(timeout=300) for p in runs]
    for proc, (_out, err) in zip(runs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert outs[0][0].split()[:2] == ["refreshed", "1"] and outs[1][0].strip() == "retrieved 20"

"""Milvus adapter rules: every pymilvus exception mapped, torn index files repaired, one client per file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.stores import StoredChunk
from lockgate.stores.milvus import MilvusStore, _error_table, translate_milvus_error
from tests.conftest import ROOT


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

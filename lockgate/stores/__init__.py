"""Vector stores: one Protocol, the adapter chosen by ``vector_store.backend``.

``milvus-lite`` is an embedded Milvus in one file (the default, no server, no key);
``milvus`` is the same ``MilvusClient`` API against a standalone or distributed server;
``pinecone`` is Pinecone serverless through the official SDK, one namespace per collection.
Each adapter translates its vendor's errors into ``lockgate.errors`` (transient ones retried
with backoff first) and checks its own request limits.

May import ``lockgate.errors``, ``lockgate.settings`` and the vendors' SDKs; no stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from lockgate.errors import ConfigError

if TYPE_CHECKING:
    from lockgate.settings import VectorStoreSettings


@dataclass(frozen=True)
class StoredChunk:
    """A row of the index as the store holds it.

    ``content_digest`` is the vector's identity (chunk content and embedder); ``embedder`` names
    the embedder's identity digest, kept beside it so a store can be audited without the manifest.
    """

    chunk_id: str
    content_digest: str
    doc: str
    title: str
    text: str
    embedder: str = ""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    chunk_id: str
    score: float
    doc: str
    title: str
    text: str


@runtime_checkable
class VectorStore(Protocol):
    """What the refresh and retrieval need from a vector database.

    ``upsert`` and ``delete`` return only after the store acknowledged the write; a write that
    did not land raises (``TransientError`` when a retry may pass). A store whose writes are done
    in this process (Milvus Lite) says so with ``writes_in_process = True``: a refresh then writes
    between its batches instead of beside the encoder (``lockgate.refresh.writer_for``).
    """

    uri: str  # where the store is (a file, a server, an index host)
    collection: str  # the collection (Milvus) or namespace (Pinecone)

    def ensure_collection(self, dim: int) -> None:
        """Create the collection if missing; fail if it exists with another dimension."""
        ...

    def manifest(self) -> dict[str, str]:
        """``chunk_id -> content_digest`` for everything stored; empty if there is no collection yet."""
        ...

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        """Insert or replace chunks by id."""
        ...

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id."""
        ...

    def flush(self) -> None:
        """Seal the acknowledged writes where the store has such a step (Milvus: into segments,
        which reads need to be fast); a no-op where it has none. A refresh calls it once, after
        its last write."""
        ...

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        """Nearest chunks for each query vector, best first."""
        ...

    def count(self) -> int:
        """How many vectors the collection holds (0 if there is no collection)."""
        ...

    def close(self) -> None:
        """Release the connection (and, for Milvus Lite, the database file)."""
        ...


def open_store(backend: str, uri: str, collection: str, settings: VectorStoreSettings | None = None) -> VectorStore:
    """The vector store adapter named by ``vector_store.backend``.

    Args:
        backend: ``milvus-lite``, ``milvus`` or ``pinecone``.
        uri: a Milvus Lite file, a Milvus server URL, or a Pinecone index host (for Pinecone, a
            value that is not an http(s) URL means: find the host by ``settings.pinecone_index``).
        collection: the collection (Milvus) or namespace (Pinecone).
        settings: the rest of ``vector_store`` (lock wait, Pinecone index, cloud and region);
            defaults apply when omitted.

    Raises:
        ConfigError: an unknown backend, or a URI that does not fit it.
    """
    from lockgate.settings import VectorStoreSettings

    options = settings or VectorStoreSettings()
    if backend == "milvus-lite":
        from lockgate.stores.milvus import MilvusStore

        if uri.startswith(("http://", "https://", "tcp://")):
            raise ConfigError(f"vector_store.uri: milvus-lite takes a file path, got the server URL {uri!r}")
        return MilvusStore(uri, collection, lock_timeout_s=options.lock_timeout_s)
    if backend == "milvus":
        from lockgate.stores.milvus import MilvusStore

        if not uri.startswith(("http://", "https://", "tcp://")):
            raise ConfigError(f"vector_store.uri: milvus needs a server URL (http://host:19530), got {uri!r}")
        return MilvusStore(uri, collection)
    if backend == "pinecone":
        from lockgate.stores.pinecone import open_pinecone

        return open_pinecone(uri, collection, options)
    raise ConfigError(f"vector_store.backend: unknown backend {backend!r} (milvus-lite, milvus, pinecone)")


__all__ = ["Hit", "StoredChunk", "VectorStore", "open_store"]

"""Vector stores: a small Protocol and the Milvus implementation (Milvus Lite by default).

Milvus Lite is an embedded engine in one file, with the same ``MilvusClient`` API as a
Milvus standalone or distributed cluster: point ``vector_store.uri`` at ``http://host:19530``
and nothing else changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lockgate.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

# Milvus caps one insert request's size; batches of this many rows stay far below it.
UPSERT_BATCH = 500


class _UnimplementedLiteCall(logging.Filter):
    """Milvus Lite's embedded server does not implement ``AllocTimestamp``; pymilvus asks for it,
    gets "not implemented", and carries on. gRPC logs that answer as an error with a traceback:
    drop exactly that record, nothing else the server logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "Method not implemented" in str(exc))


_LITE_NOISE = _UnimplementedLiteCall()


@dataclass(frozen=True)
class StoredChunk:
    """A row of the index as the store holds it."""

    chunk_id: str
    content_digest: str
    doc: str
    title: str
    text: str


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
    """What the refresh and retrieval need from a vector database."""

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

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        """Nearest chunks for each query vector, best first."""
        ...


class MilvusStore:
    """Milvus through ``MilvusClient``: a local ``.db`` file (Milvus Lite) or a server URI."""

    def __init__(self, uri: str, collection: str) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        if not uri.startswith(("http://", "https://", "tcp://")):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            grpc_server_log = logging.getLogger("grpc._server")
            if _LITE_NOISE not in grpc_server_log.filters:
                grpc_server_log.addFilter(_LITE_NOISE)
        try:
            self._client = MilvusClient(uri=uri)
        except MilvusException as exc:
            raise TransientError(f"vector_store.uri: cannot open Milvus at {uri}: {exc}") from None
        self.uri = uri
        self.collection = collection

    def ensure_collection(self, dim: int) -> None:
        from pymilvus import DataType

        if self._client.has_collection(self.collection):
            info = self._client.describe_collection(self.collection)
            have = next((f.get("params", {}).get("dim") for f in info["fields"] if f["name"] == "vector"), None)
            if have is not None and int(have) != dim:
                raise ConfigError(
                    f"vector_store.collection {self.collection!r} at {self.uri} holds "
                    f"{have}-d vectors, the embedder makes {dim}-d; use another collection"
                )
            # A reopened collection starts released; it must be loaded before queries.
            self._client.load_collection(self.collection)
            return
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("content_digest", DataType.VARCHAR, max_length=80)
        schema.add_field("doc", DataType.VARCHAR, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("text", DataType.VARCHAR, max_length=8192)
        index = self._client.prepare_index_params()
        # FLAT is exact; the default AUTOINDEX traded away recall on small collections.
        index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        self._client.create_collection(self.collection, schema=schema, index_params=index)

    def manifest(self) -> dict[str, str]:
        if not self._client.has_collection(self.collection):
            return {}
        self._client.load_collection(self.collection)
        out: dict[str, str] = {}
        for row in self._iter_rows(["id", "content_digest"]):
            out[row["id"]] = row["content_digest"]
        return out

    def _iter_rows(self, fields: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        iterator = self._client.query_iterator(
            self.collection, batch_size=1000, filter='id != ""', output_fields=fields
        )
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        return rows

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        for start in range(0, len(chunks), UPSERT_BATCH):
            rows = [
                {
                    "id": c.chunk_id,
                    "vector": v.tolist(),
                    "content_digest": c.content_digest,
                    "doc": c.doc,
                    "title": c.title,
                    "text": c.text,
                }
                for c, v in zip(
                    chunks[start : start + UPSERT_BATCH], vectors[start : start + UPSERT_BATCH], strict=True
                )
            ]
            self._client.upsert(self.collection, data=rows)
        self._client.flush(self.collection)

    def delete(self, chunk_ids: list[str]) -> None:
        for start in range(0, len(chunk_ids), UPSERT_BATCH):
            self._client.delete(self.collection, ids=chunk_ids[start : start + UPSERT_BATCH])
        if chunk_ids:
            self._client.flush(self.collection)

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        if len(vectors) == 0:
            return []
        results = self._client.search(
            self.collection,
            data=[v.tolist() for v in vectors],
            limit=top_k,
            output_fields=["doc", "title", "text"],
            search_params={"metric_type": "COSINE"},
        )
        return [
            [
                Hit(
                    chunk_id=str(h["id"]),
                    score=float(h["distance"]),
                    doc=h["entity"]["doc"],
                    title=h["entity"]["title"],
                    text=h["entity"]["text"],
                )
                for h in hits
            ]
            for hits in results
        ]

    def close(self) -> None:
        self._client.close()


def open_store(backend: str, uri: str, collection: str) -> VectorStore:
    """The vector store adapter named by ``vector_store.backend``."""
    if backend == "milvus-lite":
        return MilvusStore(uri, collection)
    raise ConfigError(f"vector_store.backend: unknown backend {backend!r}")

"""Moved to ``lockgate.stores`` (one module per adapter); these names stay importable from here."""

from __future__ import annotations

from lockgate.stores import Hit, StoredChunk, VectorStore, open_store
from lockgate.stores.milvus import UPSERT_BATCH, MilvusStore

__all__ = ["UPSERT_BATCH", "Hit", "MilvusStore", "StoredChunk", "VectorStore", "open_store"]

"""The ``vector_store`` area: where chunk embeddings live."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lockgate.settings.base import Area


class VectorStoreSettings(Area):
    """Where chunk embeddings live."""

    backend: Literal["milvus-lite", "milvus", "pinecone"] = Field(
        default="milvus-lite",
        description="'milvus-lite': an embedded file; 'milvus': a Milvus server (uri http://host:19530); "
        "'pinecone': Pinecone serverless, one namespace per collection (key from pinecone_api_key_env).",
    )
    uri: str = Field(
        default="",
        description="Store URI: a Milvus Lite file (empty means <home>/index/milvus.db), a Milvus server URL, "
        "or a Pinecone index host (empty: looked up by pinecone_index, created if missing).",
    )
    collection: str = Field(
        default="lockgate_chunks",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Collection (Milvus) or namespace (Pinecone) name.",
    )
    max_delete_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Refuse a refresh that would delete more than this share of the stored vectors "
        "(a wrong corpus_dir), unless forced.",
    )
    lock_timeout_s: float = Field(
        default=600.0, gt=0.0, description="Milvus Lite: how long to wait for another process using the file."
    )
    pinecone_index: str = Field(
        default="lockgate",
        pattern=r"^[a-z0-9][a-z0-9-]{0,44}$",
        description="Pinecone index name (lowercase letters, digits, dashes).",
    )
    pinecone_cloud: Literal["aws", "gcp", "azure"] = Field(default="aws", description="Serverless cloud.")
    pinecone_region: str = Field(default="us-east-1", min_length=1, description="Serverless region.")
    pinecone_api_key_env: str = Field(
        default="PINECONE_API_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the Pinecone API key (never put the key in a profile).",
    )
    switch: Literal["auto", "after_gates", "manual"] = Field(
        default="auto",
        description="Blue/green: each embedder builds its own collection; 'auto' serves a new one as soon as its "
        "build is complete, 'after_gates' once a release evaluated with it passes every gate (eval and drift), "
        "'manual' waits for `python -m flows index switch`.",
    )

    # Where the index is and how to reach it; the index build's digest counts.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {
            "uri",
            "max_delete_share",
            "lock_timeout_s",
            "pinecone_index",
            "pinecone_cloud",
            "pinecone_region",
            "pinecone_api_key_env",
            "switch",
        }
    )

"""Pinecone serverless through the official SDK: one index, one namespace per collection.

The data plane (upsert, fetch, list, query, delete) goes to the index host; creating or
finding the index is the control plane, behind ``PineconeControlPlane`` so that the data
plane can be tested against any server that speaks it (``needledb``) while the SDK's control
plane calls are tested on their own. Writes are cut to Pinecone's request limits, by count
and by the bytes of the serialized request. Rate limits and server errors are retried with
backoff (the SDK's transport retries first; what still fails is retried here, then raised as
``TransientError``); every other vendor error becomes a ``ConfigError`` or ``StageError``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import SecretStr

from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.stores import Hit, StoredChunk
from lockgate.stores._retry import with_backoff

if TYPE_CHECKING:
    from lockgate.settings import VectorStoreSettings

log = logging.getLogger(__name__)

MAX_UPSERT_RECORDS = 1000  # Pinecone: records per upsert request
MAX_REQUEST_BYTES = 2 * 1000 * 1000  # Pinecone: 2 MB per upsert request (decimal, to stay on the safe side)
MAX_METADATA_BYTES = 40 * 1000  # Pinecone: metadata per record
MAX_DELETE_IDS = 1000  # Pinecone: ids per delete request
FETCH_BATCH = 100  # ids per fetch (they travel in the URL)
METRIC = "cosine"


def _error_table() -> dict[type[Exception], type[LockgateError]]:
    """Every exception type the Pinecone SDK raises and the Lockgate error it becomes."""
    from pinecone import errors as e

    return {
        e.RateLimitError: TransientError,  # 429
        e.ServiceError: TransientError,  # 5xx
        e.PineconeTimeoutError: TransientError,
        e.PineconeConnectionError: TransientError,
        e.IndexInitFailedError: StageError,
        e.IndexTerminatedError: StageError,
        e.UnauthorizedError: ConfigError,  # 401: the key is wrong
        e.ForbiddenError: ConfigError,  # 403: the key may not do this
        e.PaymentRequiredError: ConfigError,  # 402: the project's plan
        e.NotFoundError: ConfigError,  # 404: no such index at this host
        e.ConflictError: StageError,  # 409
        e.FailedPreconditionError: StageError,  # 412
        e.PayloadTooLargeError: StageError,  # 413: a batch over the limit is our bug
        e.ApiError: StageError,  # any other status (400: a bad request)
        e.PineconeValueError: StageError,
        e.PineconeTypeError: StageError,
        e.ResponseParsingError: StageError,
        e.PineconeError: StageError,  # the SDK's root
    }


def translate_pinecone_error(exc: Exception, where: str = "Pinecone") -> LockgateError | None:
    """The Lockgate error for a Pinecone SDK exception; ``None`` if it is not one."""
    table = _error_table()
    for cls in type(exc).__mro__:
        kind = table.get(cls)  # type: ignore[arg-type]
        if kind is not None:
            break
    else:
        return None
    status = getattr(exc, "status_code", None)
    detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = f"{where}: {type(exc).__name__}{f' {status}' if status else ''}: {detail}"
    if kind is ConfigError and status in (401, 403):
        text += " (check the API key in the variable vector_store.pinecone_api_key_env names)"
    return kind(text)


def _retry_after(exc: Exception) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


class PineconeControlPlane(Protocol):
    """Finding and creating indexes (Pinecone's control plane)."""

    def index_host(self, name: str) -> str | None:
        """The data-plane host of index ``name``; ``None`` if there is no such index."""
        ...

    def create_index(self, name: str, dim: int, metric: str) -> str:
        """Create a serverless index and return its host once it is ready."""
        ...


class SdkControlPlane:
    """The control plane through the SDK: serverless indexes in one cloud and region."""

    def __init__(self, api_key: SecretStr, cloud: str, region: str, host: str | None = None) -> None:
        self._api_key = api_key
        self.cloud = cloud
        self.region = region
        self.host = host

    def _client(self) -> Any:
        from pinecone import Pinecone

        return Pinecone(api_key=self._api_key.get_secret_value(), host=self.host)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        where = f"Pinecone control plane: {what}"
        return with_backoff(where, fn, lambda exc: translate_pinecone_error(exc, where), retry_after=_retry_after)

    def index_host(self, name: str) -> str | None:
        pc = self._client()
        if not self._call(f"has_index {name!r}", lambda: pc.has_index(name)):
            return None
        return str(self._call(f"describe_index {name!r}", lambda: pc.describe_index(name)).host)

    def create_index(self, name: str, dim: int, metric: str) -> str:
        from pinecone import ServerlessSpec

        pc = self._client()
        spec = ServerlessSpec(cloud=self.cloud, region=self.region)
        log.info("creating Pinecone serverless index %s (%d-d, %s, %s/%s)", name, dim, metric, self.cloud, self.region)
        # The SDK waits until the index is ready.
        model = self._call(
            f"create_index {name!r}", lambda: pc.create_index(name=name, dimension=dim, metric=metric, spec=spec)
        )
        return str(model.host)


def _record(chunk: StoredChunk, vector: np.ndarray) -> dict[str, Any]:
    metadata = {
        "doc": chunk.doc,
        "chunk_digest": chunk.content_digest,
        "embedder": chunk.embedder,
        "title": chunk.title,
        "text": chunk.text,
    }
    over = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8")) - MAX_METADATA_BYTES
    if over > 0:  # the text is for display; its embedding was made from the whole of it
        raw = chunk.text.encode("utf-8")
        metadata["text"] = raw[: max(0, len(raw) - over - 16)].decode("utf-8", errors="ignore")
    return {"id": chunk.chunk_id, "values": [float(x) for x in vector], "metadata": metadata}


def _request_bytes(records: list[dict[str, Any]], namespace: str) -> int:
    """Bytes of the upsert request body as JSON (Python's float text is never shorter than the SDK's)."""
    return len(json.dumps({"vectors": records, "namespace": namespace}, separators=(",", ":")).encode("utf-8"))


def upsert_batches(
    records: list[dict[str, Any]],
    namespace: str,
    max_records: int = MAX_UPSERT_RECORDS,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Cut ``records`` into upsert requests of at most ``max_records`` records and ``max_bytes`` bytes.

    Raises:
        StageError: one record alone is over ``max_bytes``.
    """
    empty = _request_bytes([], namespace)
    batch: list[dict[str, Any]] = []
    size = empty
    for record in records:
        one = len(json.dumps(record, separators=(",", ":")).encode("utf-8"))
        if empty + one > max_bytes:
            raise StageError(
                f"Pinecone: record {record['id']} alone is {one} bytes, over the {max_bytes}-byte request limit"
            )
        if batch and (len(batch) == max_records or size + 1 + one > max_bytes):
            yield batch
            batch, size = [], empty
        size += one + (1 if batch else 0)
        batch.append(record)
    if batch:
        yield batch


class PineconeStore:
    """A Pinecone index's namespace as a ``VectorStore``.

    Args:
        host: the index's data-plane host; ``None`` to find it (or create the index) by ``index_name``.
        namespace: the collection.
        api_key: the key (from the environment, see ``open_pinecone``).
        control: the control plane, used when ``host`` is unknown.
        index_name: the index to find or create.
    """

    def __init__(
        self,
        host: str | None,
        namespace: str,
        api_key: SecretStr,
        control: PineconeControlPlane,
        index_name: str = "lockgate",
        attempts: int = 5,
        base_delay_s: float = 0.5,
    ) -> None:
        self.host = host
        self.uri = host or f"pinecone:{index_name}"
        self.collection = namespace
        self.namespace = namespace
        self.index_name = index_name
        self._api_key = api_key
        self._control = control
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._index: Any = None

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        where = f"Pinecone {self.uri} namespace {self.namespace!r}: {what}"
        return with_backoff(
            where,
            lambda: fn(**kwargs),
            lambda exc: translate_pinecone_error(exc, where),
            attempts=self._attempts,
            base_delay_s=self._base_delay_s,
            retry_after=_retry_after,
        )

    def _data_plane(self, create_dim: int | None = None) -> Any:
        """The SDK's index client; ``None`` when there is no index yet and none is to be made."""
        if self._index is not None:
            return self._index
        if self.host is None:
            self.host = self._control.index_host(self.index_name)
            if self.host is None:
                if create_dim is None:
                    return None
                self.host = self._control.create_index(self.index_name, create_dim, METRIC)
            self.uri = self.host
        from pinecone import Pinecone

        self._index = Pinecone(api_key=self._api_key.get_secret_value()).Index(host=self.host)
        return self._index

    def ensure_collection(self, dim: int) -> None:
        index = self._data_plane(create_dim=dim)
        have = self._call("describe_index_stats", index.describe_index_stats).dimension
        if have is not None and int(have) != dim:
            raise ConfigError(
                f"vector_store: Pinecone index at {self.uri} holds {have}-d vectors, the embedder makes {dim}-d; "
                "use another vector_store.pinecone_index"
            )

    def _ids(self) -> list[str]:
        index = self._data_plane()
        if index is None:
            return []
        ids: list[str] = []
        token: str | None = None
        while True:
            page = self._call(
                "list",
                index.list_paginated,
                namespace=self.namespace,
                limit=100,
                pagination_token=token,
            )
            ids.extend(item.id for item in page.vectors)
            token = page.pagination.next if page.pagination else None
            if not token:
                return ids

    def manifest(self) -> dict[str, str]:
        index = self._data_plane()
        out: dict[str, str] = {}
        ids = self._ids()
        for start in range(0, len(ids), FETCH_BATCH):
            batch = ids[start : start + FETCH_BATCH]
            fetched = self._call("fetch", index.fetch, ids=batch, namespace=self.namespace)
            for vid, vector in fetched.vectors.items():
                out[vid] = str((vector.metadata or {}).get("chunk_digest", ""))
        return out

    def count(self) -> int:
        return len(self._ids())

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return
        index = self._data_plane(create_dim=int(vectors.shape[1]))
        records = [_record(c, v) for c, v in zip(chunks, vectors, strict=True)]
        for batch in upsert_batches(records, self.namespace):
            done = self._call("upsert", index.upsert, vectors=batch, namespace=self.namespace, show_progress=False)
            if done.upserted_count != len(batch):
                raise TransientError(
                    f"Pinecone {self.uri}: upsert acknowledged {done.upserted_count} of {len(batch)} records"
                )

    def delete(self, chunk_ids: list[str]) -> None:
        index = self._data_plane()
        if index is None:
            return
        for start in range(0, len(chunk_ids), MAX_DELETE_IDS):
            batch = chunk_ids[start : start + MAX_DELETE_IDS]
            self._call("delete", index.delete, ids=batch, namespace=self.namespace)

    def flush(self) -> None:
        """Nothing to seal: Pinecone applies an acknowledged write by itself."""

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        index = self._data_plane()
        if index is None:
            return [[] for _ in vectors]
        results = []
        for v in vectors:
            response = self._call(
                "query",
                index.query,
                vector=[float(x) for x in v],
                top_k=top_k,
                namespace=self.namespace,
                include_metadata=True,
            )
            results.append(
                [
                    Hit(
                        chunk_id=m.id,
                        score=float(m.score),
                        doc=str((m.metadata or {}).get("doc", "")),
                        title=str((m.metadata or {}).get("title", "")),
                        text=str((m.metadata or {}).get("text", "")),
                    )
                    for m in response.matches
                ]
            )
        return results

    def drop(self) -> None:
        """Remove every vector of the namespace (blue/green clean-up)."""
        index = self._data_plane()
        if index is not None and self._ids():
            self._call("delete_all", index.delete, delete_all=True, namespace=self.namespace)

    def close(self) -> None:
        self._index = None


def pinecone_api_key(variable: str) -> SecretStr:
    """The API key from the environment variable ``variable``.

    Raises:
        ConfigError: the variable is not set.
    """
    value = os.environ.get(variable, "")
    if not value.strip():
        raise ConfigError(
            f"vector_store.backend is pinecone but the environment variable {variable} "
            "(vector_store.pinecone_api_key_env) holds no API key"
        )
    return SecretStr(value.strip())


def open_pinecone(uri: str, collection: str, settings: VectorStoreSettings) -> PineconeStore:
    """A ``PineconeStore`` for ``settings``: the index host is ``uri`` when it is an http(s) URL,
    otherwise it is looked up (and the index created when first written) by ``pinecone_index``."""
    key = pinecone_api_key(settings.pinecone_api_key_env)
    host = uri if uri.startswith(("http://", "https://")) else None
    control = SdkControlPlane(key, settings.pinecone_cloud, settings.pinecone_region)
    return PineconeStore(host, collection, key, control, index_name=settings.pinecone_index)

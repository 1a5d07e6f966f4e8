"""Milvus through ``MilvusClient``: a local file (Milvus Lite) or a server URI (``milvus``).

Milvus Lite serves one database file from one process. Here every store on one file in a
process shares one client, and a process waits (up to ``lock_timeout_s``) for another that
holds the file, so a nightly refresh overlapping a release waits instead of failing.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.stores import Hit, StoredChunk
from lockgate.stores._retry import with_backoff

log = logging.getLogger(__name__)

# Milvus caps one insert request's size; batches of this many rows stay far below it.
UPSERT_BATCH = 500
# An acknowledged write is in Milvus's write-ahead log (Milvus Lite's too: it survives a killed
# process); a flush seals the log into a segment, and costs about as much for 256 rows as for
# 4,096. Flushed after this many rows written, when the refresh is done (reads of unsealed rows
# are slow: 3.6 s against 0.8 s for a manifest of 7,881), and on close.
FLUSH_ROWS = 4096
# VARCHAR limits of the schema, in bytes (Milvus counts UTF-8 bytes).
FIELD_BYTES = {"id": 128, "content_digest": 80, "doc": 1024, "title": 1024, "text": 8192}
SERVER_SCHEMES = ("http://", "https://", "tcp://")


class _UnimplementedLiteCall(logging.Filter):
    """Milvus Lite's embedded server does not implement ``AllocTimestamp``; pymilvus asks for it,
    gets "not implemented", and carries on. gRPC logs that answer as an error with a traceback:
    drop exactly that record, nothing else the server logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "Method not implemented" in str(exc))


_LITE_NOISE = _UnimplementedLiteCall()


class _LiteClientTimestamp(logging.Filter):
    """Milvus Lite has no MVCC timestamp to give a query iterator; pymilvus warns and uses the
    client's clock, which is right for an embedded single-process engine. Drop exactly that warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs from milvus server" not in record.getMessage()


_LITE_ITERATOR_NOISE = _LiteClientTimestamp()


def _error_table() -> dict[type[Exception], type[LockgateError]]:
    """Every pymilvus exception type and the Lockgate error it becomes (``TransientError`` is retried)."""
    from pymilvus import exceptions as e

    return {
        e.ConnectError: TransientError,
        e.MilvusUnavailableException: TransientError,
        e.ConnectionNotExistException: TransientError,
        e.SchemaMismatchRetryableException: TransientError,
        e.SchemaNotReadyException: TransientError,
        e.ConnectionConfigException: ConfigError,
        e.ServerVersionIncompatibleException: ConfigError,
        e.CollectionNotExistException: ConfigError,
        e.ParamError: StageError,
        e.DescribeCollectionException: StageError,
        e.PartitionAlreadyExistException: StageError,
        e.IndexNotExistException: StageError,
        e.AmbiguousIndexName: StageError,
        e.CannotInferSchemaException: StageError,
        e.DataTypeNotMatchException: StageError,
        e.DataTypeNotSupportException: StageError,
        e.DataNotMatchException: StageError,
        e.PrimaryKeyException: StageError,
        e.PartitionKeyException: StageError,
        e.ClusteringKeyException: StageError,
        e.FieldsTypeException: StageError,
        e.FunctionsTypeException: StageError,
        e.FieldTypeException: StageError,
        e.AutoIDException: StageError,
        e.InvalidConsistencyLevel: StageError,
        e.MilvusException: StageError,  # the root: retried only when the server says so (below)
    }


def translate_milvus_error(exc: Exception, where: str = "Milvus") -> LockgateError | None:
    """The Lockgate error for a pymilvus (or gRPC) exception; ``None`` if it is neither."""
    import grpc
    from pymilvus.exceptions import ErrorCode, MilvusException

    if isinstance(exc, MilvusException):
        kind: type[LockgateError] = StageError
        for cls in type(exc).__mro__:
            found = _error_table().get(cls)  # type: ignore[arg-type]
            if found is not None:
                kind = found
                break
        if exc.retriable or exc.code == ErrorCode.RATE_LIMIT:
            kind = TransientError
        return kind(f"{where}: {exc.message or type(exc).__name__} (code {exc.code})")
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        transient = code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED,
        )
        return (TransientError if transient else StageError)(f"{where}: gRPC {code}")
    return None


def _fit(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    raw = value.encode("utf-8")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", errors="ignore")


@dataclass
class _LiteHandle:
    client: Any
    lock_fd: int
    users: int


_LITE_HANDLES: dict[str, _LiteHandle] = {}
_LITE_GUARD = threading.Lock()


def _lock_file(path: Path, timeout_s: float) -> int:
    """Hold ``<file>.lock`` exclusively, waiting up to ``timeout_s`` for another process to let go."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            raise TransientError(
                f"vector_store.uri: Milvus Lite file {path} is still in use by another process after "
                f"{timeout_s:.0f}s (vector_store.lock_timeout_s)"
            )
        if not told:
            log.info("waiting for Milvus Lite file %s: another process is using it", path)
            told = True
        time.sleep(0.2)


def _drop_torn_index_files(db: Path) -> None:
    """Remove index side files that a killed process left half-written.

    Milvus Lite writes a segment's FLAT index (a NumPy ``.npy`` of its vectors) in place, and
    on the next open fails to load a truncated one instead of rebuilding it. They are derived
    from the segment data, and are rebuilt when missing; only torn ones are removed, and only
    while this process holds the file.
    """
    for side in db.glob("collections/*/partitions/*/indexes/*.idx"):
        try:
            with side.open("rb") as f:
                size = side.stat().st_size
                if side.name.endswith(".flat.idx"):
                    major, _ = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)
                    whole = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize <= size
                else:
                    whole = size > 0
        except (ValueError, OSError, EOFError):
            whole = False
        if not whole:
            log.warning("removing a half-written Milvus Lite index file (it is rebuilt): %s", side)
            side.unlink(missing_ok=True)


def _open_lite(path: Path, timeout_s: float) -> Any:
    """The process's one client for this Milvus Lite file (opened, or shared if already open)."""
    from pymilvus import MilvusClient

    key = str(path.resolve())
    with _LITE_GUARD:
        handle = _LITE_HANDLES.get(key)
        if handle is not None:
            handle.users += 1
            return handle.client
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _lock_file(path, timeout_s)
        try:
            _drop_torn_index_files(path)
            client = with_backoff(f"open {path}", lambda: MilvusClient(uri=key), translate_milvus_error, attempts=3)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        _LITE_HANDLES[key] = _LiteHandle(client, fd, 1)
        return client


def _close_lite(path: Path) -> None:
    key = str(path.resolve())
    with _LITE_GUARD:
        handle = _LITE_HANDLES.get(key)
        if handle is None:
            return
        handle.users -= 1
        if handle.users > 0:
            return
        del _LITE_HANDLES[key]
        try:
            handle.client.close()
        finally:
            # Milvus Lite keeps serving the file until told: let go of it before the lock.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(key)
            fcntl.flock(handle.lock_fd, fcntl.LOCK_UN)
            os.close(handle.lock_fd)


class MilvusStore:
    """Milvus through ``MilvusClient``: a local ``.db`` file (Milvus Lite) or a server URI."""

    def __init__(self, uri: str, collection: str, lock_timeout_s: float = 600.0) -> None:
        from pymilvus import MilvusClient
        from pymilvus.client import entity_helper

        # pymilvus checks a row's VARCHAR value as if it were a list of strings, one character at
        # a time (about 1 s of CPU for the 7,881 rows of bench_refresh's corpus, a third of the
        # store's side of a refresh). Every string written here is fitted to its field first
        # (FIELD_BYTES), and the server refuses one that is still too long (code 6, a StageError
        # here): the client's copy of the check only costs time.
        entity_helper.CHECK_STR_ARRAY = False

        self.uri = uri
        self.collection = collection
        self._lite = not uri.startswith(SERVER_SCHEMES)
        self._closed = False
        self._loaded = False
        self._unflushed = 0
        self._seal: Future[Any] | None = None  # a flush running beside the writes
        self._sealer: ThreadPoolExecutor | None = None
        if self._lite:
            grpc_server_log = logging.getLogger("grpc._server")
            if _LITE_NOISE not in grpc_server_log.filters:
                grpc_server_log.addFilter(_LITE_NOISE)
            iterator_log = logging.getLogger("pymilvus.client.iterator.query_iterator")
            if _LITE_ITERATOR_NOISE not in iterator_log.filters:
                iterator_log.addFilter(_LITE_ITERATOR_NOISE)
            self._client = _open_lite(Path(uri), lock_timeout_s)
        else:
            self._client = self._call("connect", lambda: MilvusClient(uri=uri))

    @property
    def writes_in_process(self) -> bool:
        """Milvus Lite is a server in this process's threads: its writes take this process's CPU."""
        return self._lite

    def _call(self, what: str, fn: Any) -> Any:
        where = f"Milvus {self.uri} collection {self.collection!r}: {what}"
        return with_backoff(where, fn, lambda exc: translate_milvus_error(exc, where))

    def ensure_collection(self, dim: int) -> None:
        from pymilvus import DataType

        if self._call("has_collection", lambda: self._client.has_collection(self.collection)):
            info = self._call("describe", lambda: self._client.describe_collection(self.collection))
            have = next((f.get("params", {}).get("dim") for f in info["fields"] if f["name"] == "vector"), None)
            if have is not None and int(have) != dim:
                raise ConfigError(
                    f"vector_store.collection {self.collection!r} at {self.uri} holds "
                    f"{have}-d vectors, the embedder makes {dim}-d; use another collection"
                )
            # A reopened collection starts released; it must be loaded before queries.
            self._call("load", lambda: self._client.load_collection(self.collection))
            return
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=FIELD_BYTES["id"])
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        # The schema predates the embedder field; the embedder is part of content_digest.
        for name in ("content_digest", "doc", "title", "text"):
            schema.add_field(name, DataType.VARCHAR, max_length=FIELD_BYTES[name])
        index = self._client.prepare_index_params()
        # FLAT is exact; the default AUTOINDEX traded away recall on small collections.
        index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
        self._call(
            "create_collection",
            lambda: self._client.create_collection(self.collection, schema=schema, index_params=index),
        )

    def _has(self) -> bool:
        return bool(self._call("has_collection", lambda: self._client.has_collection(self.collection)))

    def manifest(self) -> dict[str, str]:
        if not self._has():
            return {}
        self._call("load", lambda: self._client.load_collection(self.collection))
        return {row["id"]: row["content_digest"] for row in self._iter_rows(["id", "content_digest"])}

    def count(self) -> int:
        if not self._has():
            return 0
        self._call("load", lambda: self._client.load_collection(self.collection))
        return len(self._iter_rows(["id"]))

    def _iter_rows(self, fields: list[str]) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
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

        return list(self._call("query", read))

    def upsert(self, chunks: list[StoredChunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        for start in range(0, len(chunks), UPSERT_BATCH):
            rows = [
                {
                    "id": c.chunk_id,
                    "vector": v.tolist(),
                    "content_digest": c.content_digest,
                    "doc": _fit(c.doc, FIELD_BYTES["doc"]),
                    "title": _fit(c.title, FIELD_BYTES["title"]),
                    "text": _fit(c.text, FIELD_BYTES["text"]),
                }
                for c, v in zip(
                    chunks[start : start + UPSERT_BATCH], vectors[start : start + UPSERT_BATCH], strict=True
                )
            ]
            self._call("upsert", lambda rows=rows: self._client.upsert(self.collection, data=rows))
        self._written(len(chunks))

    def delete(self, chunk_ids: list[str]) -> None:
        if not chunk_ids or not self._has():
            return
        for start in range(0, len(chunk_ids), UPSERT_BATCH):
            ids = chunk_ids[start : start + UPSERT_BATCH]
            self._call("delete", lambda ids=ids: self._client.delete(self.collection, ids=ids))
        self._written(len(chunk_ids))

    def _written(self, rows: int) -> None:
        self._unflushed += rows
        if self._unflushed >= FLUSH_ROWS:
            # A flush is mostly waiting (pymilvus asks for the flush state every 0.5 s until the
            # segment is sealed): it runs beside the next writes, one at a time, and the next flush
            # (or close) waits for it and raises what it raised.
            self._settle_seal()
            if self._sealer is None:
                self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="milvus-flush")
            self._seal = self._sealer.submit(self._flush_now)
            self._unflushed = 0

    def _flush_now(self) -> None:
        self._call("flush", lambda: self._client.flush(self.collection))

    def _settle_seal(self) -> None:
        seal, self._seal = self._seal, None
        if seal is not None:
            seal.result()

    def flush(self) -> None:
        """Seal what was written since the last flush into a segment (an acknowledged write is
        durable without it; reads of sealed rows are faster)."""
        self._settle_seal()
        if self._unflushed:
            self._flush_now()
            self._unflushed = 0

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        if len(vectors) == 0:
            return []
        if not self._loaded:
            # A collection reopened by another process starts released; queries need it loaded.
            if not self._has():
                raise ConfigError(
                    f"vector_store: collection {self.collection!r} does not exist at {self.uri}; run the refresh first"
                )
            self._call("load", lambda: self._client.load_collection(self.collection))
            self._loaded = True
        results = self._call(
            "search",
            lambda: self._client.search(
                self.collection,
                data=[v.tolist() for v in vectors],
                limit=top_k,
                output_fields=["doc", "title", "text"],
                search_params={"metric_type": "COSINE"},
            ),
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

    def point_alias(self, alias: str) -> None:
        """Make the Milvus alias ``alias`` name this collection (blue/green switch).

        Readers that open the logical name then read this generation, at once. A real collection
        already under that name (the layout before blue/green) is renamed ``<alias>__legacy``,
        not dropped.
        """
        # Asked about an alias, describe_collection names the collection behind it (describe_alias,
        # asked about a name that is no alias, logs an RPC error with a traceback before it raises).
        if self._call("has_collection", lambda: self._client.has_collection(alias)):
            behind = self._call("describe", lambda: self._client.describe_collection(alias)).get("collection_name")
            if behind != alias:
                if behind != self.collection:
                    self._call("alter_alias", lambda: self._client.alter_alias(self.collection, alias))
                return
            log.warning(
                "renaming the collection %r to %r: its name becomes the serving alias", alias, alias + "__legacy"
            )
            self._call("rename", lambda: self._client.rename_collection(alias, alias + "__legacy"))
        self._call("create_alias", lambda: self._client.create_alias(self.collection, alias))

    def drop(self) -> None:
        """Remove the collection (blue/green clean-up)."""
        if self._has():
            self._call("drop", lambda: self._client.drop_collection(self.collection))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        except LockgateError as exc:  # the writes stand in the log; a later open seals them
            log.warning("%s", exc)
        finally:
            if self._sealer is not None:
                self._sealer.shutdown(wait=True)
        if self._lite:
            _close_lite(Path(self.uri))
        else:
            self._client.close()

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A content-addressed artifact store at an fsspec URL (``s3://``, ``gs://``, ``memory://``, a folder).

The URL holds the artifacts; a local cache holds the copies stages read, because model
loaders and trainers need local paths. Writers build in the cache's staging folder as with
the local store; ``commit`` uploads the folder to ``<url>/<kind>/<digest>/`` and writes a
completeness marker, listing every file with its size, last: an upload that died half-way
has no marker, is never taken for an artifact, and is uploaded again by the next commit.
Object stores cannot rename a folder in one step, so the marker, not a rename, is what
makes an artifact visible.

With a signer, the staged folder is signed before the upload; the signature goes to
``<url>/<kind>/<digest>.sig`` before the marker (so a complete artifact has one) and to the same
place beside the cached copy, and a fetch brings it along. Verification reads the cached copy:
what is loaded is what is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from pydantic import BaseModel

from lockgate.artifacts.local import ADDRESS, relocated
from lockgate.digest import digest_tree, short
from lockgate.errors import ConfigError, DataError, LockgateError, TransientError
from lockgate.signing import SIGNATURE_SUFFIX, ArtifactSigning, sign_folder, signature_path

_R = TypeVar("_R", bound=BaseModel)

# Written last into an uploaded artifact's folder (the name checkpoints.py uses for the same job);
# never copied into the cache, so a cached artifact holds exactly what was staged.
MARKER = "lockgate-complete.json"

# What a remote failure becomes, looked up along the exception's MRO (most specific first).
# ``TransientError`` is retried by the tasks; the others are verdicts retrying would repeat.
ERROR_MAP: dict[type[Exception], type[LockgateError]] = {
    FileNotFoundError: DataError,  # an artifact the marker lists has lost a file
    PermissionError: ConfigError,  # credentials or bucket policy
    ImportError: ConfigError,  # the URL's filesystem package (s3fs, gcsfs) is not installed
    ValueError: ConfigError,  # a URL fsspec cannot parse, or an unknown protocol
    TimeoutError: TransientError,
    ConnectionError: TransientError,
    OSError: TransientError,  # what else remote filesystems raise (s3fs: throttling, 5xx)
}


def translate_fsspec_error(exc: BaseException, where: str) -> LockgateError | None:
    """The Lockgate error for a remote filesystem failure at ``where``; ``None`` if it is not one."""
    for cls in type(exc).__mro__:
        kind = ERROR_MAP.get(cls)  # type: ignore[call-overload]
        if kind is not None:
            return kind(f"{where}: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def _translated(where: str) -> Iterator[None]:
    try:
        yield
    except LockgateError:
        raise
    except Exception as exc:
        mapped = translate_fsspec_error(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


class FsspecArtifactStore:
    """Artifacts as folders named by their digest at an fsspec URL, read through a local cache."""

    def __init__(self, url: str, cache_dir: Path, signing: ArtifactSigning | None = None) -> None:
        self.url = url.rstrip("/")
        self.signing = signing
        with _translated(f"artifact store {self.url}"):
            self.fs, self._base = fsspec.core.url_to_fs(self.url)
        self._base = self._base.rstrip("/")
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".staging").mkdir(exist_ok=True)

    def staging(self, kind: str) -> Path:
        """A fresh, empty local folder to build an artifact of ``kind`` in."""
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root / ".staging"))

    def path_of(self, kind: str, digest: str) -> Path:
        """The artifact's local copy (whether or not it exists yet), fetched first when only the URL holds it."""
        local = self._cached(kind, short(digest, 16))
        if not local.is_dir():
            self._fetch(kind, short(digest, 16))
        return local

    def commit(self, kind: str, staged: Path, digest: str | None = None) -> tuple[str, Path]:
        """Upload a staged folder to its content address (once per digest); returns ``(digest, local copy)``.

        Args:
            kind: artifact family, a folder under the URL and the cache.
            staged: the folder built under ``staging``.
            digest: a digest computed by the caller (e.g. over a subset of files); by
                default the digest of the whole folder.
        """
        digest = digest or digest_tree(staged)
        address = short(digest, 16)
        remote = self._remote(kind, address)
        cached = self._cached(kind, address)
        with _translated(f"artifact store {self.url}: committing {kind}/{address}"):
            complete = self._listing(remote) is not None
            if self.signing is not None and not (complete and self.fs.exists(f"{remote}{SIGNATURE_SUFFIX}")):
                signature = sign_folder(self.signing, staged, signature_path(cached))
                self.fs.put_file(str(signature), f"{remote}{SIGNATURE_SUFFIX}")
            if not complete:
                self._upload(staged, remote, digest)
        return digest, self._keep_in_cache(staged, cached)

    def scratch(self, name: str) -> Path:
        """A stable local working folder (e.g. for resumable training), not content-addressed."""
        path = self.root / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def locate(self, path: str) -> str:
        """The local copy of an artifact path recorded anywhere (another cache, another machine).

        An artifact the cache lacks is downloaded from the URL. Paths outside any store, and
        artifacts the URL does not hold, come back unchanged.
        """
        parts = Path(path).parts
        for i in range(len(parts) - 1, 0, -1):
            if not ADDRESS.match(parts[i]):
                continue
            kind, address = parts[i - 1], parts[i]
            if self._cached(kind, address).is_dir() or self._fetch(kind, address):
                return str(self.root.joinpath(*parts[i - 1 :]))
        return path

    def relocate(self, record: _R) -> _R:
        """A copy of ``record`` whose ``*path`` fields point into this store's cache."""
        return relocated(record, self.locate)

    def _cached(self, kind: str, address: str) -> Path:
        return self.root / kind / address

    def _remote(self, kind: str, address: str) -> str:
        return f"{self._base}/{kind}/{address}"

    def _listing(self, remote: str) -> dict[str, int] | None:
        """The files of a complete artifact at ``remote`` (relative path: size); ``None`` if it is not complete."""
        marker = f"{remote}/{MARKER}"
        if not self.fs.exists(marker):
            return None
        try:
            files: dict[str, int] = json.loads(self.fs.cat_file(marker))["files"]
        except (ValueError, KeyError, TypeError):
            return None  # a marker torn by a crash on a filesystem without atomic writes
        return files

    def _upload(self, staged: Path, remote: str, digest: str) -> None:
        files = {p.relative_to(staged).as_posix(): p.stat().st_size for p in sorted(staged.rglob("*")) if p.is_file()}
        for parent in sorted({f"{remote}/{rel}".rsplit("/", 1)[0] for rel in files} | {remote}):
            self.fs.makedirs(parent, exist_ok=True)
        for rel in files:
            self.fs.put_file(str(staged / rel), f"{remote}/{rel}")
        marker: dict[str, Any] = {"digest": digest, "files": files}
        self.fs.pipe_file(f"{remote}/{MARKER}", json.dumps(marker, sort_keys=True).encode("utf-8"))

    def _fetch(self, kind: str, address: str) -> bool:
        """Download a complete artifact into the cache; False if the URL does not hold one."""
        remote = self._remote(kind, address)
        with _translated(f"artifact store {self.url}: reading {kind}/{address}"):
            files = self._listing(remote)
            if files is None:
                return False
            downloaded = self.staging(kind)
            signature = f"{remote}{SIGNATURE_SUFFIX}"
            if self.fs.exists(signature):  # before the files: an artifact is never cached without it
                local_signature = signature_path(self._cached(kind, address))
                local_signature.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(signature, str(local_signature))
            try:
                for rel, size in files.items():
                    target = downloaded / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(f"{remote}/{rel}", str(target))
                    if target.stat().st_size != size:
                        raise DataError(
                            f"artifact store {self.url}: {kind}/{address}/{rel} has {target.stat().st_size} bytes, "
                            f"its marker says {size}"
                        )
            except BaseException:
                shutil.rmtree(downloaded, ignore_errors=True)
                raise
        self._keep_in_cache(downloaded, self._cached(kind, address))
        return True

    def _keep_in_cache(self, folder: Path, final: Path) -> Path:
        """Move a complete local folder to its place in the cache in one rename (a racing copy wins)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(folder, ignore_errors=True)
            return final
        try:
            os.replace(folder, final)
        except OSError:
            # Another writer or reader filled the cache with identical content: keep theirs.
            if not final.exists():
                raise
            shutil.rmtree(folder, ignore_errors=True)
        return final

"""Artifacts: the content-addressed store every stage writes its outputs to.

``ArtifactStore`` is the port; ``open_artifacts`` picks the adapter from a URL at the edge (a
flow's start, through ``lockgate.workspace.Workspace``): a plain path is the local store
(``local.py``), an fsspec URL (``s3://``, ``gs://``, ``memory://``) the fsspec store
(``fsspec.py``). Given a signer (``lockgate.signing``), every commit is signed. May import
``lockgate.digest``, ``lockgate.errors`` and ``lockgate.signing``; nothing above them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from lockgate.artifacts.local import LocalArtifactStore
from lockgate.signing import ArtifactSigning

_R = TypeVar("_R", bound=BaseModel)

__all__ = ["ArtifactStore", "LocalArtifactStore", "open_artifacts"]


class ArtifactStore(Protocol):
    """Artifacts as folders named by their digest.

    Stages build in ``staging`` and ``commit``; what they read comes back as local paths
    (``path_of``, ``locate``), so model loaders and trainers never see a URL.
    """

    signing: ArtifactSigning | None
    """Who signs every commit (``None``: nothing is signed); checkpoints and verifiers use the same."""

    @property
    def root(self) -> Path:
        """The local folder the store's artifacts are read from (the store itself, or its cache)."""
        ...

    def staging(self, kind: str) -> Path: ...

    def path_of(self, kind: str, digest: str) -> Path: ...

    def commit(self, kind: str, staged: Path, digest: str | None = None) -> tuple[str, Path]: ...

    def scratch(self, name: str) -> Path: ...

    def locate(self, path: str) -> str: ...

    def relocate(self, record: _R) -> _R: ...


def open_artifacts(
    location: str, cache_dir: Path | None = None, signing: ArtifactSigning | None = None
) -> ArtifactStore:
    """The artifact store at ``location``: a local folder, or an fsspec URL read through ``cache_dir``;
    with ``signing``, every commit is signed."""
    if "://" not in location or location.startswith("file://"):
        return LocalArtifactStore(Path(location.removeprefix("file://")), signing)
    from lockgate.artifacts.fsspec import FsspecArtifactStore

    if cache_dir is None:
        raise ValueError(f"artifact store {location}: a remote store needs a local cache folder")
    store: ArtifactStore = FsspecArtifactStore(location, cache_dir, signing)
    return store

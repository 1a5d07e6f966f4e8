"""A content-addressed artifact store on the local disk.

Writers build an artifact in a private staging folder, then ``commit`` moves it under
``<root>/<kind>/<digest>`` in one rename. Two writers of the same content end with one
copy; a crash mid-write leaves only staging debris, never a half artifact.

With a signer (``signing.method``; the Workspace passes it) every commit signs the folder first:
the signature ``<kind>/<digest>.sig`` lies beside it (see ``lockgate.signing``), written before
the rename, so a visible artifact always has one. Committing content already there signs it
again if its signature is gone (the staged copy is what gets signed, never the stored one).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from lockgate.digest import digest_tree, short
from lockgate.signing import ArtifactSigning, sign_folder, signature_path

_R = TypeVar("_R", bound=BaseModel)
ADDRESS = re.compile(r"^[0-9a-f]{16}$")  # an artifact folder: the first 16 hex digits of its digest


class LocalArtifactStore:
    """Artifacts as folders named by their digest under one root."""

    def __init__(self, root: Path, signing: ArtifactSigning | None = None) -> None:
        self.root = Path(root)
        self.signing = signing
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".staging").mkdir(exist_ok=True)

    def staging(self, kind: str) -> Path:
        """A fresh, empty folder to build an artifact of ``kind`` in."""
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root / ".staging"))

    def path_of(self, kind: str, digest: str) -> Path:
        """Where the artifact with this digest lives (whether or not it exists yet)."""
        return self.root / kind / short(digest, 16)

    def commit(self, kind: str, staged: Path, digest: str | None = None) -> tuple[str, Path]:
        """Move a staged folder to its content address; returns ``(digest, path)``.

        Args:
            kind: artifact family, a folder under the root.
            staged: the folder built under ``staging``.
            digest: a digest computed by the caller (e.g. over a subset of files); by
                default the digest of the whole folder.
        """
        digest = digest or digest_tree(staged)
        final = self.path_of(kind, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.signing is not None and not (final.exists() and signature_path(final).is_file()):
            sign_folder(self.signing, staged, signature_path(final))
        if final.exists():
            shutil.rmtree(staged, ignore_errors=True)
            return digest, final
        try:
            os.replace(staged, final)
        except OSError:
            # Another writer won the race with identical content: keep theirs.
            if not final.exists():
                raise
            shutil.rmtree(staged, ignore_errors=True)
        return digest, final

    def scratch(self, name: str) -> Path:
        """A stable working folder (e.g. for resumable training), not content-addressed."""
        path = self.root / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def locate(self, path: str) -> str:
        """Where an artifact path recorded under another store root (a moved checkout) is in this one.

        Paths of this store, paths outside any store, and artifacts this store does not hold
        come back unchanged.
        """
        parts = Path(path).parts
        for i in range(len(parts) - 1, 0, -1):
            if ADDRESS.match(parts[i]) and (self.root / parts[i - 1] / parts[i]).is_dir():
                return str(self.root.joinpath(*parts[i - 1 :]))
        return path

    def relocate(self, record: _R) -> _R:
        """A copy of ``record`` whose ``*path`` fields point into this store."""
        return relocated(record, self.locate)


def relocated(record: _R, locate: Callable[[str], str]) -> _R:
    """A copy of ``record`` whose ``path`` and ``*_path`` fields went through ``locate``."""
    update = {
        name: locate(value)
        for name in type(record).model_fields
        if name == "path" or name.endswith("_path")
        if isinstance(value := getattr(record, name), str) and value
    }
    return record.model_copy(update=update)

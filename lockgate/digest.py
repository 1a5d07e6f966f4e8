"""Content digests: the identity of every artifact Lockgate produces."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def digest_bytes(data: bytes) -> str:
    """SHA-256 of some bytes, as ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_json(value: Any) -> str:
    """Digest of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return digest_bytes(canonical.encode("utf-8"))


def digest_file(path: Path) -> str:
    """Digest of one file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return "sha256:" + h.hexdigest()


def digest_tree(root: Path, ignore: Iterable[str] = ()) -> str:
    """Digest of a folder: relative paths and file digests, independent of mtime and order.

    Args:
        root: the folder.
        ignore: top-level names to leave out (e.g. scratch folders).
    """
    skip = set(ignore)
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] in skip:
            continue
        entries.append([rel.as_posix(), digest_file(path)])
    return digest_json(entries)


def short(digest: str, n: int = 12) -> str:
    """The first ``n`` hex characters of a digest, for names and logs."""
    return digest.split(":", 1)[-1][:n]

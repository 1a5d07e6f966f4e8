"""Detect data changes: a fingerprint of the sources and corpus, compared with the last one seen."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lockgate.corpus import DOC_SUFFIXES
from lockgate.digest import digest_file, digest_json


@dataclass(frozen=True)
class DataChange:
    """The outcome of one look at the data."""

    changed: bool
    digest: str
    previous: str | None
    files: dict[str, str]


def fingerprint(sources: list[Path], corpus_dir: Path) -> tuple[str, dict[str, str]]:
    """Digest of every training source and corpus document, and the per-file digests."""
    files = {str(p): digest_file(p) for p in sources if p.is_file()}
    if corpus_dir.is_dir():
        files.update(
            {
                str(p): digest_file(p)
                for p in sorted(corpus_dir.rglob("*"))
                if p.is_file() and p.suffix.lower() in DOC_SUFFIXES
            }
        )
    return digest_json(files), files


def check_for_change(sources: list[Path], corpus_dir: Path, state_file: Path) -> DataChange:
    """Compare the data's fingerprint with the one recorded last time, then record the new one."""
    digest, files = fingerprint(sources, corpus_dir)
    previous = None
    if state_file.is_file():
        previous = json.loads(state_file.read_text(encoding="utf-8")).get("digest")
    if previous != digest:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=state_file.parent, prefix=".watch-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"digest": digest, "files": files}, fh, indent=1)
        os.replace(tmp, state_file)
    return DataChange(changed=previous != digest, digest=digest, previous=previous, files=files)

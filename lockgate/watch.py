"""Detect data changes: a fingerprint of the sources and corpus, compared with the last one announced.

Looking and recording are two steps on purpose: the caller records the new fingerprint
only after it has announced the change, so a change whose event was lost (a crash, a dead
API) is announced again on the next look instead of being forgotten.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lockgate.corpus import DOC_SUFFIXES
from lockgate.digest import digest_json
from lockgate.readers import is_url, source_digest


@dataclass(frozen=True)
class DataChange:
    """The outcome of one look at the data."""

    changed: bool
    digest: str
    previous: str | None
    files: dict[str, str]


def fingerprint(sources: list[Path] | list[str], corpus_dir: Path) -> tuple[str, dict[str, str]]:
    """Digest of every training source (local path or fsspec URL) and corpus document, and the per-file digests."""
    files = {str(s): source_digest(str(s)) for s in sources if is_url(str(s)) or Path(s).is_file()}
    if corpus_dir.is_dir():
        files.update(
            {
                str(p): source_digest(str(p))
                for p in sorted(corpus_dir.rglob("*"))
                if p.is_file() and p.suffix.lower() in DOC_SUFFIXES
            }
        )
    return digest_json(files), files


def look_for_change(sources: list[Path] | list[str], corpus_dir: Path, state_file: Path) -> DataChange:
    """Compare the data's fingerprint with the last one recorded; records nothing."""
    digest, files = fingerprint(sources, corpus_dir)
    previous = None
    if state_file.is_file():
        previous = json.loads(state_file.read_text(encoding="utf-8")).get("digest")
    return DataChange(changed=previous != digest, digest=digest, previous=previous, files=files)


def record_change(change: DataChange, state_file: Path) -> None:
    """Remember a fingerprint as announced (atomically); call it after the event went out."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=state_file.parent, prefix=".watch-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"digest": change.digest, "files": change.files}, fh, indent=1)
    os.replace(tmp, state_file)


def check_for_change(sources: list[Path] | list[str], corpus_dir: Path, state_file: Path) -> DataChange:
    """Look, and record the new fingerprint at once (for callers that announce nothing)."""
    change = look_for_change(sources, corpus_dir, state_file)
    if change.changed:
        record_change(change, state_file)
    return change

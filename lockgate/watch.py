"""Detect data and prompt changes: fingerprints compared with the last ones announced.

Looking and recording are two steps on purpose: the caller records the new fingerprint
only after it has announced the change, so a change whose event was lost (a crash, a dead
API) is announced again on the next look instead of being forgotten.

Prompt files are fingerprinted apart from the data, one version per prompt: a new prompt
version starts a prompt-only release (no retraining), new data starts a model release.
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


@dataclass(frozen=True)
class PromptChange:
    """A prompt file whose version differs from the one last announced."""

    name: str
    digest: str
    version: str
    previous: str | None


def look_for_prompt_changes(folder: Path, state_file: Path) -> tuple[list[PromptChange], dict[str, str]]:
    """Prompt files whose version (content digest of what renders) is new since the last announcement.

    Returns the changes and, per file that does not load, its one-line problem: a broken
    prompt is reported, never announced (the prompt release would only refuse it).
    """
    from lockgate.errors import ConfigError
    from lockgate.prompts import load_prompt, prompt_files

    seen = _read_state(state_file)
    changes, problems = [], {}
    for path in prompt_files(folder):
        try:
            spec = load_prompt(path)
        except ConfigError as exc:
            problems[path.stem] = str(exc)
            continue
        if seen.get(spec.name) != spec.digest:
            changes.append(PromptChange(spec.name, spec.digest, spec.version, seen.get(spec.name)))
    return changes, problems


def record_prompt_change(change: PromptChange, state_file: Path) -> None:
    """Remember one prompt's version as announced (atomically); call it after the event went out."""
    seen = _read_state(state_file)
    seen[change.name] = change.digest
    state_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=state_file.parent, prefix=".watch-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(seen, fh, indent=1, sort_keys=True)
    os.replace(tmp, state_file)


def _read_state(state_file: Path) -> dict[str, str]:
    if not state_file.is_file():
        return {}
    value = json.loads(state_file.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

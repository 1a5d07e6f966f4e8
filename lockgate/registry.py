"""The model registry: versions by digest, aliases that move, and a history to roll back with.

The local registry is one JSON state file under a lock, replaced atomically on every
change, so a crash leaves either the old or the new state, never a mix. W&B Artifacts
(aliases) is the production counterpart; it mirrors this state rather than replacing it,
because aliases cannot be read back offline.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from lockgate.errors import DataError, LockgateError

ALIASES = ("candidate", "canary", "production")


class ModelVersion(BaseModel):
    """A registered model: where it is and what it was made from."""

    model_config = ConfigDict(frozen=True)

    digest: str
    path: str
    lineage: dict[str, Any]
    registered_at: str


class AliasMove(BaseModel):
    """One entry of the history: an alias went from one version to another."""

    model_config = ConfigDict(frozen=True)

    at: str
    alias: str
    previous: str | None
    current: str | None
    reason: str


class RegistryState(BaseModel):
    versions: dict[str, ModelVersion] = {}
    aliases: dict[str, str] = {}
    history: list[AliasMove] = []


class ModelRegistry(Protocol):
    """What the promote stage needs from a registry."""

    def register(self, digest: str, path: str, lineage: dict[str, Any]) -> ModelVersion: ...

    def get(self, alias: str) -> ModelVersion | None: ...

    def set_alias(self, alias: str, digest: str, reason: str) -> AliasMove: ...

    def rollback(self, alias: str, reason: str) -> AliasMove: ...

    def history(self) -> list[AliasMove]: ...


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class LocalRegistry:
    """A registry in one folder: ``state.json`` guarded by ``state.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / "state.json"
        self._lock_path = self.root / "state.lock"

    @contextmanager
    def _locked(self) -> Iterator[RegistryState]:
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> RegistryState:
        if not self._state_path.exists():
            return RegistryState()
        try:
            return RegistryState.model_validate_json(self._state_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{self._state_path}: registry state is corrupt: {exc}") from None

    def _write(self, state: RegistryState) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(state.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_path)

    def snapshot(self) -> RegistryState:
        """The whole state as it is now."""
        return self._read()

    def register(self, digest: str, path: str, lineage: dict[str, Any]) -> ModelVersion:
        """Add a version (idempotent: registering a digest again keeps the first entry)."""
        with self._locked() as state:
            if digest not in state.versions:
                state.versions[digest] = ModelVersion(digest=digest, path=path, lineage=lineage, registered_at=_now())
            return state.versions[digest]

    def get(self, alias: str) -> ModelVersion | None:
        """The version an alias points at, or None."""
        state = self._read()
        digest = state.aliases.get(alias)
        return state.versions.get(digest) if digest else None

    def set_alias(self, alias: str, digest: str, reason: str) -> AliasMove:
        """Point an alias at a registered version and record the move."""
        if alias not in ALIASES:
            raise LockgateError(f"unknown alias {alias!r}; known: {ALIASES}")
        with self._locked() as state:
            if digest not in state.versions:
                raise LockgateError(f"cannot point {alias!r} at unregistered model {digest}")
            move = AliasMove(at=_now(), alias=alias, previous=state.aliases.get(alias), current=digest, reason=reason)
            if move.previous != digest:  # a no-op move would only make rollback step in place
                state.aliases[alias] = digest
                state.history.append(move)
            return move

    def rollback(self, alias: str, reason: str) -> AliasMove:
        """Point an alias back where it was before its last move."""
        with self._locked() as state:
            last = next((m for m in reversed(state.history) if m.alias == alias), None)
            if last is None:
                raise LockgateError(f"alias {alias!r} has no history to roll back")
            move = AliasMove(
                at=_now(),
                alias=alias,
                previous=state.aliases.get(alias),
                current=last.previous,
                reason=f"rollback: {reason}",
            )
            if last.previous is None:
                state.aliases.pop(alias, None)
            else:
                state.aliases[alias] = last.previous
            state.history.append(move)
            return move

    def history(self) -> list[AliasMove]:
        return list(self._read().history)

    def champion_for(self, candidate: str) -> ModelVersion | None:
        """The model a candidate must beat: production, or, if the candidate already is
        production, the version it replaced (so a re-run judges it exactly as before).

        Returns None when there is nothing to beat yet.
        """
        state = self._read()
        current = state.aliases.get("production")
        if current is None:
            return None
        if current != candidate:
            return state.versions[current]
        promoted = next(
            (m for m in reversed(state.history) if m.alias == "production" and m.current == candidate), None
        )
        previous = promoted.previous if promoted else None
        return state.versions.get(previous) if previous else None


def describe_state(state: RegistryState) -> str:
    """Markdown of the aliases and the last moves."""
    lines = ["| alias | model | path |", "|---|---|---|"]
    for alias in ALIASES:
        digest = state.aliases.get(alias)
        version = state.versions.get(digest) if digest else None
        lines.append(f"| {alias} | `{digest[:19] if digest else '-'}` | {version.path if version else '-'} |")
    return "\n".join(lines)

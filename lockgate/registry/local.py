"""The local registry: versions by digest, aliases that move, and a history to roll back with.

One JSON state file under a lock, replaced atomically on every change (data and folder
fsynced, the previous state kept as ``state.json.bak``), so a crash leaves either the old
or the new state, never a mix. Every rule that must hold across processes (a revoked model
never becomes production, production moved since the decision) is checked inside the
same lock as the write it guards.

A version records the digest of its artifact's signature (``lockgate.signing``) when it is
registered, and every move records it in its evidence: what the gate saw is named byte for byte.
Given a signer, a promotion first verifies the candidate's files against that signature (before the
lock: hashing a model takes a while) and refuses a tampered one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lockgate._io import atomic_write_text
from lockgate.digest import digest_file, short
from lockgate.errors import DataError, LockgateError
from lockgate.signing import ArtifactSigning, artifact_root, signature_path, verify_artifact

ALIASES = ("candidate", "canary", "production")


class ModelVersion(BaseModel):
    """A registered model: where it is and what it was made from."""

    model_config = ConfigDict(frozen=True)

    digest: str
    path: str
    lineage: dict[str, Any]
    registered_at: str
    signature: str | None = None  # digest of the artifact's signature file when registered (None: unsigned)


class AliasMove(BaseModel):
    """One entry of the history: an alias went from one version to another."""

    model_config = ConfigDict(frozen=True)

    at: str
    alias: str
    previous: str | None
    current: str | None
    reason: str
    kind: Literal["move", "rollback"] = "move"
    evidence: dict[str, Any] = {}


class RegistryState(BaseModel):
    versions: dict[str, ModelVersion] = {}
    aliases: dict[str, str] = {}
    history: list[AliasMove] = []
    revoked: dict[str, str] = {}


class StaleChampion(LockgateError):
    """Production moved between evaluation and promotion: the decision is about a stale champion."""


class RevokedModel(LockgateError):
    """The model was rolled back out of production; it may not become production again by itself."""


def recorded_path(state: RegistryState, digest: str, key: str) -> str | None:
    """The path the newest move to ``digest`` recorded under ``key`` in its evidence (``card``: the
    model card, ``decision``: the committed gate decision), or None where no move recorded one."""
    for move in reversed(state.history):
        entry = (move.evidence or {}).get(key) if move.current == digest else None
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            return str(entry["path"])
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def signature_digest(path: str) -> str | None:
    """Digest of the signature of the artifact ``path`` is (or lies in); None where it has none."""
    signature = signature_path(artifact_root(Path(path)))
    return digest_file(signature) if signature.is_file() else None


class LocalRegistry:
    """A registry in one folder: ``state.json`` guarded by ``state.lock``."""

    def __init__(self, root: Path, signing: ArtifactSigning | None = None) -> None:
        self.root = Path(root)
        self.signing = signing
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
            first = " ".join(str(exc).split())[:200]
            backup = self._state_path.with_name("state.json.bak")
            how = (
                f"restore the previous state with `cp {backup} {self._state_path}`"
                if backup.exists()
                else f"no backup exists; move {self._state_path} aside to start an empty registry"
            )
            raise DataError(f"{self._state_path}: registry state is corrupt ({first}); {how}") from None

    def _write(self, state: RegistryState) -> None:
        atomic_write_text(self._state_path, state.model_dump_json(indent=2), backup=True)

    def snapshot(self) -> RegistryState:
        """The whole state as it is now."""
        return self._read()

    def register(self, digest: str, path: str, lineage: dict[str, Any]) -> ModelVersion:
        """Add a version (idempotent: registering a digest again keeps the first entry)."""
        with self._locked() as state:
            if digest not in state.versions:
                state.versions[digest] = ModelVersion(
                    digest=digest, path=path, lineage=lineage, registered_at=_now(), signature=signature_digest(path)
                )
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
            if alias == "production" and digest in state.revoked:
                why = state.revoked[digest]
                raise RevokedModel(f"{short(digest)} was rolled back ({why}); it cannot be production")
            previous = state.aliases.get(alias)
            self._move(state, alias, digest, reason, {})
            return AliasMove(at=_now(), alias=alias, previous=previous, current=digest, reason=reason)

    def rollback(self, alias: str, reason: str) -> AliasMove:
        """Step an alias back to where it was before the move that brought it to its current version.

        Rolling ``production`` back also revokes the version it leaves: the gate will not
        promote that version again on its own.
        """
        with self._locked() as state:
            current = state.aliases.get(alias)
            arrival = next(
                (m for m in reversed(state.history) if m.alias == alias and m.kind == "move" and m.current == current),
                None,
            )
            if arrival is None:
                raise LockgateError(f"alias {alias!r} has no history to roll back")
            if alias == "production" and arrival.previous in state.revoked:
                raise RevokedModel(
                    f"rolling production back would restore {short(arrival.previous or '')}, which was itself "
                    f"rolled back ({state.revoked[arrival.previous or '']}); point it at a good version instead"
                )
            move = AliasMove(
                at=_now(), alias=alias, previous=current, current=arrival.previous, reason=reason, kind="rollback"
            )
            if arrival.previous is None:
                state.aliases.pop(alias, None)
            else:
                state.aliases[alias] = arrival.previous
            if alias == "production" and current is not None:
                state.revoked[current] = reason
            state.history.append(move)
            return move

    def revoked_reason(self, digest: str) -> str | None:
        """Why this version was rolled back out of production, or None if it never was."""
        return self._read().revoked.get(digest)

    def record_release(
        self,
        digest: str,
        path: str,
        lineage: dict[str, Any],
        evidence: dict[str, Any],
        promote: bool,
        expected_production: str | None,
    ) -> tuple[str, str | None]:
        """Register a candidate, point ``candidate`` at it and, if ``promote``, ``production`` too,
        all in one atomic write.

        Args:
            expected_production: the production version the decision was made against (None if
                there was none); if production moved since, nothing is written.

        Returns:
            ``(action, previous_production)`` with action ``promoted`` or ``kept``.

        Raises:
            StaleChampion: production is no longer ``expected_production``.
            RevokedModel: the candidate was rolled back, possibly after the gate looked.
            TamperedError: with a signer, the candidate is to be promoted and is not what was signed.
        """
        if promote and self.signing is not None:
            signature: str | None = verify_artifact(self.signing, Path(path)).signature_digest
        else:
            signature = signature_digest(path)
        if signature is not None:
            evidence = {**evidence, "signature": signature}
        with self._locked() as state:
            if digest not in state.versions:
                state.versions[digest] = ModelVersion(
                    digest=digest, path=path, lineage=lineage, registered_at=_now(), signature=signature
                )
            current = state.aliases.get("production")
            self._move(state, "candidate", digest, "built", evidence)
            if not promote or current == digest:
                return "kept", current
            if digest in state.revoked:
                raise RevokedModel(f"{short(digest)} was rolled back ({state.revoked[digest]}); not promoting it")
            if current != expected_production:
                raise StaleChampion(
                    f"production is {current} but the candidate was judged against {expected_production}; re-run"
                )
            self._move(state, "production", digest, "gate passed", evidence)
            return "promoted", current

    @staticmethod
    def _move(state: RegistryState, alias: str, digest: str, reason: str, evidence: dict[str, Any]) -> None:
        previous = state.aliases.get(alias)
        if previous != digest:  # a no-op move would only make rollback step in place
            state.aliases[alias] = digest
            state.history.append(
                AliasMove(at=_now(), alias=alias, previous=previous, current=digest, reason=reason, evidence=evidence)
            )

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
            (
                m
                for m in reversed(state.history)
                if m.alias == "production" and m.kind == "move" and m.current == candidate
            ),
            None,
        )
        previous = promoted.previous if promoted else None
        return state.versions.get(previous) if previous else None


def describe_state(state: RegistryState) -> str:
    """Markdown of the aliases and the last moves."""
    lines = ["| alias | model | path |", "|---|---|---|"]
    for alias in ALIASES:
        digest = state.aliases.get(alias)
        version = state.versions.get(digest) if digest else None
        lines.append(f"| {alias} | `{short(digest) if digest else '-'}` | {version.path if version else '-'} |")
    return "\n".join(lines)

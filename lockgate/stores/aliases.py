"""Blue/green collections: one collection per embedder, and an alias naming the one that serves.

A refresh with a new embedder builds a new collection beside the serving one (named after the
logical collection and the embedder's digest); the serving alias moves to it only once it is
complete, and the previous one is kept for ``rollback``. The alias state is one JSON file under
the state folder, written atomically under a lock.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lockgate._io import atomic_write_text
from lockgate.digest import short
from lockgate.errors import ConfigError


def physical_collection(collection: str, embedder_id: str) -> str:
    """The collection (or namespace) that holds ``collection``'s vectors from one embedder."""
    return f"{collection}__{short(embedder_id, 12)}"


class Generation(BaseModel):
    """One complete build of a logical collection by one embedder."""

    model_config = ConfigDict(frozen=True)

    collection: str
    embedder: str
    embedder_name: str
    build_digest: str
    vectors: int
    built_at: str


class AliasMove(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str
    previous: str | None
    current: str
    reason: str


class CollectionAliases(BaseModel):
    """Which generation serves a logical collection, which served before, and every complete one."""

    serving: str | None = None
    previous: str | None = None
    generations: dict[str, Generation] = Field(default_factory=dict)
    history: list[AliasMove] = Field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class IndexAliases:
    """The alias file for one state folder (``<home>/index/aliases.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[dict[str, CollectionAliases]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            body = {k: v.model_dump(mode="json") for k, v in sorted(state.items())}
            atomic_write_text(self.path, json.dumps(body, indent=1, sort_keys=True))

    def _read(self) -> dict[str, CollectionAliases]:
        if not self.path.is_file():
            return {}
        raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return {k: CollectionAliases.model_validate(v) for k, v in raw.items()}

    def state(self, collection: str) -> CollectionAliases:
        return self._read().get(collection, CollectionAliases())

    def serving(self, collection: str) -> str | None:
        """The physical collection that serves ``collection`` (``None`` before the first complete build)."""
        return self.state(collection).serving

    def record(self, collection: str, generation: Generation, switch: bool) -> AliasMove | None:
        """Note a complete build; move the serving alias to it when ``switch`` (or when nothing serves yet)."""
        with self._locked() as state:
            entry = state.setdefault(collection, CollectionAliases())
            entry.generations[generation.collection] = generation
            if entry.serving == generation.collection or not (switch or entry.serving is None):
                return None
            return self._move(entry, generation.collection, "complete build" if switch else "first build")

    def switch(self, collection: str, to: str | None = None, reason: str = "manual switch") -> AliasMove:
        """Serve ``to`` (default: the newest complete generation).

        Raises:
            ConfigError: no such complete generation, or it already serves.
        """
        with self._locked() as state:
            entry = state.get(collection)
            if entry is None or not entry.generations:
                raise ConfigError(f"index {collection!r}: no complete build to switch to; run the refresh first")
            target = to or max(entry.generations.values(), key=lambda g: g.built_at).collection
            if target not in entry.generations:
                raise ConfigError(
                    f"index {collection!r}: {target!r} is not a complete build; known: {sorted(entry.generations)}"
                )
            if target == entry.serving:
                raise ConfigError(f"index {collection!r}: {target!r} already serves")
            return self._move(entry, target, reason)

    def rollback(self, collection: str, reason: str = "manual rollback") -> AliasMove:
        """Serve the previous generation again.

        Raises:
            ConfigError: there is no previous generation.
        """
        with self._locked() as state:
            entry = state.get(collection)
            if entry is None or entry.previous is None:
                raise ConfigError(f"index {collection!r}: nothing to roll back to (no previous serving build)")
            return self._move(entry, entry.previous, reason)

    @staticmethod
    def _move(entry: CollectionAliases, target: str, reason: str) -> AliasMove:
        move = AliasMove(at=_now(), previous=entry.serving, current=target, reason=reason)
        entry.previous, entry.serving = entry.serving, target
        entry.history.append(move)
        return move


def home_aliases(home: Path) -> IndexAliases:
    """The serving aliases of the state folder ``home`` (``<home>/index/aliases.json``)."""
    return IndexAliases(home / "index" / "aliases.json")


def serving_collection(home: Path, collection: str) -> str:
    """The physical collection serving ``collection`` in the state folder ``home`` (the logical name
    itself before any blue/green build, or where the store resolves it through its own alias)."""
    return home_aliases(home).serving(collection) or collection

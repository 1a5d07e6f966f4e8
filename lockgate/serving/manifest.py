"""The serving manifest: which variants serve, on which engine, with which prompt, index and weight.

The deploy stage writes it (atomically) only after a smoke test passed; the gateway re-reads
it when the file changes, so a switch needs no restart and drops no request: a request keeps
the manifest it started with.

It has two writers, the deploy stage and the gateway's canary rollback, and both hold the serving
folder's ``deploy.lock`` (``writer_lock``): a deploy from reading the live manifest to retiring
engines, a rollback while it re-reads, decides and writes (``swap_manifest``). A rollback never
waits for the lock and acts only on the manifest it judged, so it can neither overwrite a deploy's
new manifest with a stale one nor roll back a canary a deploy has already replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lockgate._io import atomic_write_text, exclusive_lock
from lockgate.digest import digest_json, short
from lockgate.errors import ConfigError

log = logging.getLogger(__name__)

VariantName = Literal["production", "canary"]

DEPLOY_LOCK = "deploy.lock"

# What a compare-and-swap of the manifest did: ``swapped`` (written); ``busy`` (another writer, a
# deploy, holds the lock); ``stale`` (the manifest is no longer the one judged). Only ``swapped`` wrote.
SwapOutcome = Literal["swapped", "busy", "stale"]


class Variant(BaseModel):
    """One model + prompt + index combination and its share of traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: VariantName
    model_digest: str = Field(min_length=1, description="The registry version served.")
    served_model: str = Field(min_length=1, description="The name vLLM serves it under (a LoRA's name for adapters).")
    engine_url: str = Field(pattern=r"^https?://", description="Base URL of the vLLM engine serving it.")
    model_path: str = Field(min_length=1, description="The checkpoint the engine loads.")
    adapter_path: str | None = Field(default=None, description="The LoRA adapter loaded by name, if any.")
    prompt_version: str = Field(min_length=1, description="The prompt template version rendered for it.")
    index_uri: str | None = Field(default=None, description="Vector store URI to retrieve from (None: no RAG).")
    index_collection: str | None = Field(default=None, description="Collection (index alias) in that store.")
    weight: float = Field(ge=0.0, le=1.0, description="Share of traffic.")


class ServingManifest(BaseModel):
    """Everything the gateway serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variants: tuple[Variant, ...] = Field(min_length=1, max_length=2)
    max_model_len: int = Field(ge=1, description="The engines' context length, in tokens.")
    created_at: str = ""
    reason: str = ""

    @model_validator(mode="after")
    def _one_of_each_weights_add_up(self) -> ServingManifest:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if "production" not in names:
            raise ValueError("a manifest needs a production variant")
        total = sum(v.weight for v in self.variants)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"variant weights add up to {total}, not 1")
        return self

    @property
    def digest(self) -> str:
        return digest_json(self.model_dump(exclude={"created_at", "reason"}))

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def production(self) -> Variant:
        found = self.variant("production")
        assert found is not None  # the validator guarantees it
        return found

    @property
    def canary(self) -> Variant | None:
        return self.variant("canary")

    def without_canary(self, reason: str) -> ServingManifest:
        """Everything to production: what a canary rollback serves."""
        return ServingManifest(
            variants=(self.production.model_copy(update={"weight": 1.0}),),
            max_model_len=self.max_model_len,
            created_at=now_iso(),
            reason=reason,
        )


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_manifest(path: Path) -> ServingManifest:
    """Read a manifest file.

    Raises:
        ConfigError: missing or invalid, naming the file.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no serving manifest; deploy a promoted model first (python -m flows deploy)")
    try:
        return ServingManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: not a valid serving manifest: {problems}") from None


def write_manifest(path: Path, manifest: ServingManifest) -> None:
    """Replace the manifest in one atomic rename (readers see the old or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest.model_dump(mode="json"), indent=2), backup=True)


@contextmanager
def writer_lock(
    folder: Path, wait_s: float | None, on_wait: Callable[[], None] = lambda: None, poll_s: float = 0.5
) -> Iterator[bool]:
    """Hold ``folder/deploy.lock``, the lock every writer of the serving folder's manifest takes.

    Yields whether it is held: ``on_wait`` is called once if another holder has it, then this waits
    up to ``wait_s`` seconds (None: without limit; 0: not at all) and yields False if it ran out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / DEPLOY_LOCK, wait_s, on_wait, poll_s) as held:
        yield held


def swap_manifest(
    path: Path,
    judged: ServingManifest,
    decide: Callable[[ServingManifest], ServingManifest],
    what: str,
    lock_folder: Path | None = None,
    write: Callable[[ServingManifest], None] | None = None,
) -> SwapOutcome:
    """Replace the manifest with ``decide(manifest)`` only if it is still ``judged``, holding the writer lock.

    It does not wait for the lock: a deploy holds it for minutes, and a caller that serves requests
    must not stall behind it; ``busy`` says to try again later. Under the lock the file is re-read
    and compared with ``judged`` by digest, so a decision made on a manifest a deploy has replaced
    since (the caller's copy may be a moment old) is dropped, not written over the new one.

    Args:
        decide: the manifest to write, given the current one; called, under the lock, only if it is ``judged``.
        what: the change, for the log (``canary rollback (error rate 30%)``).
        lock_folder: the folder of the writers' ``deploy.lock`` (default: the manifest's folder).
        write: how to write it (default ``write_manifest`` to ``path``).

    Returns:
        ``swapped``, ``busy`` or ``stale`` (see ``SwapOutcome``); nothing was decided or written unless ``swapped``.
    """
    folder = path.parent if lock_folder is None else lock_folder
    with writer_lock(folder, wait_s=0) as held:
        if not held:
            log.debug("%s deferred: another writer (a deploy) holds %s", what, folder / DEPLOY_LOCK)
            return "busy"
        try:
            current = load_manifest(path)
        except ConfigError as exc:
            log.warning("%s not done: the manifest it was decided on is gone (%s)", what, exc)
            return "stale"
        if current.digest != judged.digest:
            log.warning(
                "%s not done: %s was replaced since it was judged (%s, now %s; %s)",
                what,
                path,
                short(judged.digest),
                short(current.digest),
                current.reason or "no reason given",
            )
            return "stale"
        replacement = decide(current)
        (write or (lambda m: write_manifest(path, m)))(replacement)
        return "swapped"


class ManifestWatcher:
    """The current manifest, re-read when the file is replaced (checked at most every ``interval_s``).

    Args:
        lock_folder: the folder of the manifest writers' ``deploy.lock`` (the serving folder;
            default: the manifest's folder).
    """

    def __init__(self, path: Path, interval_s: float = 0.2, lock_folder: Path | None = None) -> None:
        self.path = path
        self.interval_s = interval_s
        self.lock_folder = path.parent if lock_folder is None else lock_folder
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        # Never checked: time.monotonic() counts from boot, so 0.0 would read as "just now" for the
        # first ``interval_s`` after a machine starts (a fresh CI machine, a new pod).
        self._checked = -math.inf
        self._manifest = load_manifest(path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> ServingManifest:
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return self._manifest
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                try:
                    self._manifest = load_manifest(self.path)
                    self._stamp = stamp
                except ConfigError:
                    pass  # a bad file never replaces a good manifest; the deploy stage validates before writing
            return self._manifest

    def replace_if_current(
        self, judged: ServingManifest, decide: Callable[[ServingManifest], ServingManifest], what: str
    ) -> SwapOutcome:
        """``swap_manifest`` on this file; a manifest written is served at once."""

        def write(manifest: ServingManifest) -> None:
            with self._lock:
                write_manifest(self.path, manifest)
                self._manifest = manifest
                self._stamp = self._stat()

        outcome = swap_manifest(self.path, judged, decide, what, self.lock_folder, write)
        if outcome == "stale":
            self._checked = -math.inf  # serve the manifest that replaced it from the next look on
        return outcome

"""The serving manifest: which variants serve, on which engine, with which prompt, index and weight.

The deploy stage writes it (atomically) only after a smoke test passed; the gateway re-reads
it when the file changes, so a switch needs no restart and drops no request: a request keeps
the manifest it started with.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lockgate._io import atomic_write_text
from lockgate.digest import digest_json
from lockgate.errors import ConfigError

VariantName = Literal["production", "canary"]


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


class ManifestWatcher:
    """The current manifest, re-read when the file is replaced (checked at most every ``interval_s``)."""

    def __init__(self, path: Path, interval_s: float = 0.2) -> None:
        self.path = path
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
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

    def replace(self, manifest: ServingManifest) -> None:
        """Write a new manifest and serve it at once."""
        with self._lock:
            write_manifest(self.path, manifest)
            self._manifest = manifest
            self._stamp = self._stat()

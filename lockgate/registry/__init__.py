"""The model registry: a Protocol, the adapter chosen by ``registry.backend``, and the rules
of promotion that do not depend on the orchestrator (which model is the champion, which
training data is the drift reference, what a promotion did).

The local registry is the source of truth; W&B Artifacts mirrors it (aliases cannot be
read back offline, so the mirror never decides anything).

May import settings, digest, errors, signing, prompt templates and the tracker (for the W&B mirror); never a
stage such as ``gates`` (storage must not depend on a stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from lockgate.registry.local import (
    ALIASES,
    AliasMove,
    LocalRegistry,
    ModelVersion,
    RegistryState,
    RevokedModel,
    StaleChampion,
    describe_state,
    recorded_path,
    signature_digest,
)
from lockgate.settings import RegistrySettings
from lockgate.signing import ArtifactSigning

__all__ = [
    "ALIASES",
    "AliasMove",
    "LocalRegistry",
    "ModelRegistry",
    "ModelVersion",
    "RegistryState",
    "RevokedModel",
    "StaleChampion",
    "describe_state",
    "drift_reference",
    "open_registry",
    "recorded_path",
    "signature_digest",
]


class ModelRegistry(Protocol):
    """What the release stages need from a registry."""

    def register(self, digest: str, path: str, lineage: dict[str, Any]) -> ModelVersion: ...

    def get(self, alias: str) -> ModelVersion | None: ...

    def set_alias(self, alias: str, digest: str, reason: str) -> AliasMove: ...

    def rollback(self, alias: str, reason: str) -> AliasMove: ...

    def record_release(
        self,
        digest: str,
        path: str,
        lineage: dict[str, Any],
        evidence: dict[str, Any],
        promote: bool,
        expected_production: str | None,
    ) -> tuple[str, str | None]: ...

    def champion_for(self, candidate: str) -> ModelVersion | None: ...

    def revoked_reason(self, digest: str) -> str | None: ...

    def history(self) -> list[AliasMove]: ...

    def snapshot(self) -> RegistryState: ...


def open_registry(settings: RegistrySettings, root: Path, signing: ArtifactSigning | None = None) -> ModelRegistry:
    """The registry the settings ask for, over the local state folder ``root``; with ``signing``, a
    promotion verifies the candidate against its signature first.

    Raises:
        ConfigError: the W&B mirror is asked for but ``wandb`` is not installed.
    """
    local = LocalRegistry(root, signing)
    if settings.backend == "local":
        return local
    from lockgate.registry.wandb_mirror import WandbMirroredRegistry

    return WandbMirroredRegistry(local, settings, root.parent / "wandb")


def drift_reference(registry: ModelRegistry) -> str | None:
    """The training file production was made from: what current data is compared against.

    None before anything is in production (the caller then uses the current training split).
    """
    production = registry.get("production")
    train = production.lineage.get("dataset_train") if production else None
    return str(train) if train else None

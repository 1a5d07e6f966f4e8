"""The local registry mirrored to W&B Artifacts.

Every alias move is replayed on W&B: the model it points at is logged as a version of one
``model`` artifact (its lineage as metadata, a reference to its folder as content) with the
registry aliases that point at it as W&B aliases. W&B moves an alias to the newest version
that claims it, so a promotion and a rollback look on W&B as they do here.

Offline (the default) runs are staged under ``<home>/wandb`` for ``wandb sync`` later; with
a key (``WANDB_API_KEY``, never a setting) and ``wandb_mode: online`` they go straight up.
The local state stays the source of truth: a mirror failure is logged and never undoes or
blocks a move that already happened.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lockgate.digest import short
from lockgate.errors import ConfigError
from lockgate.registry.local import ALIASES, AliasMove, LocalRegistry, ModelVersion, RegistryState, recorded_path
from lockgate.settings import RegistrySettings

log = logging.getLogger(__name__)

ARTIFACT_NAME = "lockgate-model"


class WandbMirroredRegistry:
    """A ``LocalRegistry`` whose alias moves are mirrored to W&B Artifacts."""

    # One W&B artifact per registry; the prompt registry mirrors as ``lockgate-prompt-<name>``.
    artifact_name: str = ARTIFACT_NAME
    artifact_type: str = "model"

    def __init__(self, local: LocalRegistry, settings: RegistrySettings, wandb_dir: Path) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("registry.backend: 'wandb' needs the wandb package (pip install wandb)") from None
        if settings.wandb_mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise ConfigError("registry.wandb_mode: 'online' needs WANDB_API_KEY in the environment")
        self.local = local
        self.settings = settings
        self.wandb_dir = wandb_dir

    # Reads and the rules live in the local registry.
    def register(self, digest: str, path: str, lineage: dict[str, Any]) -> ModelVersion:
        return self.local.register(digest, path, lineage)

    def get(self, alias: str) -> ModelVersion | None:
        return self.local.get(alias)

    def champion_for(self, candidate: str) -> ModelVersion | None:
        return self.local.champion_for(candidate)

    def revoked_reason(self, digest: str) -> str | None:
        return self.local.revoked_reason(digest)

    def history(self) -> list[AliasMove]:
        return self.local.history()

    def snapshot(self) -> RegistryState:
        return self.local.snapshot()

    # Writes: first the source of truth, then the mirror.
    def set_alias(self, alias: str, digest: str, reason: str) -> AliasMove:
        move = self.local.set_alias(alias, digest, reason)
        self.mirror(reason)
        return move

    def rollback(self, alias: str, reason: str) -> AliasMove:
        move = self.local.rollback(alias, reason)
        self.mirror(f"rollback: {reason}")
        return move

    def record_release(
        self,
        digest: str,
        path: str,
        lineage: dict[str, Any],
        evidence: dict[str, Any],
        promote: bool,
        expected_production: str | None,
    ) -> tuple[str, str | None]:
        outcome = self.local.record_release(digest, path, lineage, evidence, promote, expected_production)
        self.mirror("release")
        return outcome

    def mirror(self, reason: str) -> list[str]:
        """Log every version an alias points at, with its aliases; returns the digests logged.

        Failures are logged, not raised: the local move has happened and stays.
        """
        state = self.local.snapshot()
        by_version: dict[str, list[str]] = {}
        for alias in ALIASES:
            digest = state.aliases.get(alias)
            if digest:
                by_version.setdefault(digest, []).append(alias)
        try:
            self._log(state, by_version, reason)
        except Exception as exc:  # any vendor failure: the local state is the truth
            log.warning("W&B mirror failed (%s: %s); the local registry is unchanged", type(exc).__name__, exc)
            return []
        return sorted(by_version)

    def _log(self, state: RegistryState, by_version: dict[str, list[str]], reason: str) -> None:
        import wandb

        from lockgate.tracking.wandb import start_run

        if not by_version:
            return
        run = start_run(
            project=self.settings.wandb_project,
            entity=self.settings.wandb_entity,
            mode=self.settings.wandb_mode,
            directory=self.wandb_dir,
            job_type="registry-mirror",
            config={"reason": reason},
        )
        try:
            for digest, aliases in sorted(by_version.items()):
                version = state.versions[digest]
                artifact = wandb.Artifact(
                    self.artifact_name,
                    type=self.artifact_type,
                    description=f"Lockgate {self.artifact_type} {short(digest)}",
                    metadata={"digest": digest, "lineage": version.lineage, "registered_at": version.registered_at},
                )
                # The content is the model's identity; the weights stay where they are, referenced.
                with artifact.new_file(f"{self.artifact_name}.json", mode="w", encoding="utf-8") as fh:
                    json.dump({"digest": digest, "lineage": version.lineage}, fh, sort_keys=True)
                artifact.add_reference(Path(version.path).absolute().as_uri(), name=self.artifact_type, checksum=False)
                card = model_card_of(state, digest)
                if card is not None:  # the promoted model's card, as the artifact's README and description
                    artifact.add_file(str(card), name="README.md")
                    artifact.description = card.read_text(encoding="utf-8")
                run.log_artifact(artifact, aliases=[*aliases, f"sha-{short(digest)}"])
        finally:
            run.finish()


def model_card_of(state: RegistryState, digest: str) -> Path | None:
    """The model card the newest promotion of ``digest`` recorded in its evidence, if it is on disk."""
    card = recorded_path(state, digest, "card")
    return Path(card) if card is not None and Path(card).is_file() else None

"""The prompt registry: prompt versions by content digest, with the model registry's aliases
(``candidate``, ``canary``, ``production``), history, rollback and compare-and-swap promotion.

It *is* the model registry's ``LocalRegistry`` (one locked, atomically replaced state file),
one per prompt name under ``<registry>/prompts/<name>/``; a version's ``path`` is a copy of
its prompt file inside that folder, so production's prompt survives edits to ``prompts/``.

Given a signer, each copy is signed when its version is added (``versions/<hex>.json.sig`` beside
it) and ``spec`` serves a version only from its verified copy, whose content digest must be the
version's: a prompt edited in the state file or in its copy is refused naming the file.

State file fields beyond the model registry's, for serving (issue 10 reads them):

- ``traffic``: ``{"canary": w}``, the share ``w`` (0 < w < 1) of requests to send to the
  version ``aliases.canary`` points at; production gets the rest. Absent, or canary equal to
  production: no split. Derived on every write from the move that brought ``canary`` to its
  version (``evidence.traffic_weight``), so a rollback of ``canary`` restores the weight too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from lockgate._io import atomic_write_text
from lockgate.digest import short
from lockgate.errors import ConfigError
from lockgate.prompts import PromptSpec
from lockgate.registry.local import ALIASES, AliasMove, LocalRegistry, ModelVersion, RegistryState, RevokedModel
from lockgate.registry.local import StaleChampion as StaleProduction
from lockgate.settings import RegistrySettings
from lockgate.signing import ArtifactSigning, TamperedError, sign_folder, signature_path, verify_folder

__all__ = [
    "PromptRegistry",
    "StaleProduction",
    "open_prompt_registry",
]


class PromptRegistry(LocalRegistry):
    """The versions and aliases of one prompt, optionally mirrored to W&B Artifacts."""

    def __init__(
        self,
        registry_root: Path,
        name: str,
        settings: RegistrySettings | None = None,
        signing: ArtifactSigning | None = None,
    ) -> None:
        super().__init__(Path(registry_root) / "prompts" / name, signing)
        self.name = name
        self._mirror: Any = None
        if settings is not None and settings.backend == "wandb":
            from lockgate.registry.wandb_mirror import WandbMirroredRegistry

            mirror = WandbMirroredRegistry(self, settings, Path(registry_root).parent / "wandb")
            mirror.artifact_name = f"lockgate-prompt-{name}"
            mirror.artifact_type = "prompt"
            self._mirror = mirror

    # -- the serving field, kept true on every write -------------------------------------
    def _write(self, state: RegistryState) -> None:
        data = json.loads(state.model_dump_json())
        data["traffic"] = canary_traffic(state)
        atomic_write_text(self._state_path, json.dumps(data, indent=2), backup=True)

    def traffic(self) -> dict[str, float]:
        """The ``traffic`` field as serving reads it."""
        return canary_traffic(self.snapshot())

    # -- versions --------------------------------------------------------------------------
    def add(self, spec: PromptSpec) -> ModelVersion:
        """Register a prompt version (idempotent), keeping a copy of its file in the registry."""
        if spec.name != self.name:
            raise ConfigError(f"prompt {spec.name!r} does not belong in the registry of {self.name!r}")
        copy = self.root / "versions" / f"{short(spec.digest, 16)}.json"
        unsigned = self.signing is not None and not signature_path(copy).is_file()
        if not copy.exists() or unsigned:  # an unsigned copy is rewritten from the spec in hand, then signed
            copy.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(copy, spec.model_dump_json(indent=2))
        if self.signing is not None and unsigned:
            sign_folder(self.signing, copy)
        return self.register(spec.digest, str(copy), _lineage(spec))

    def spec(self, ref: str) -> PromptSpec:
        """The prompt a reference names: an alias, a version (``name@hex``), a digest or its start.

        Raises:
            ConfigError: nothing or more than one version matches.
        """
        state = self.snapshot()
        version = state.versions[self.resolve(ref, state)]
        return self._served(version)

    def _served(self, version: ModelVersion) -> PromptSpec:
        """A version's prompt: with a signer, from its verified copy (its digest checked too), else as recorded.

        Raises:
            TamperedError: the copy is not what was signed, or is not the version it is registered as.
        """
        if self.signing is None:
            return PromptSpec.model_validate(version.lineage["spec"])
        copy = Path(version.path)
        artifact = f"prompt {self.name}@{short(version.digest)}"
        verify_folder(self.signing, copy, artifact)
        spec = PromptSpec.model_validate_json(copy.read_text(encoding="utf-8"))
        if spec.digest != version.digest:
            raise TamperedError(artifact, copy.name, f"holds version {short(spec.digest)}, not {short(version.digest)}")
        return spec

    def resolve(self, ref: str, state: RegistryState | None = None) -> str:
        """The digest a reference names (see ``spec``)."""
        state = state or self.snapshot()
        if ref in ALIASES:
            digest = state.aliases.get(ref)
            if digest is None:
                raise ConfigError(f"prompt {self.name!r} has no {ref!r} version")
            return digest
        key = ref.split("@", 1)[1] if "@" in ref else ref
        key = key.removeprefix("sha256:")
        found = [d for d in state.versions if short(d, 64).startswith(key)] if key else []
        if len(found) != 1:
            known = ", ".join(f"{self.name}@{short(d)}" for d in state.versions) or "none"
            what = "no version" if not found else f"{len(found)} versions"
            raise ConfigError(f"prompt {self.name!r}: {what} match {ref!r}; registered: {known}")
        return found[0]

    def production(self) -> PromptSpec | None:
        """The prompt in production, or None before the first one."""
        version = self.get("production")
        return self._served(version) if version else None

    def serving(self, configured: PromptSpec) -> PromptSpec:
        """The prompt model releases evaluate and serve with: production's.

        Before any prompt is in production, the configured file's version becomes production
        (there is nothing to compare a first prompt against; the first model is judged with it).
        """
        current = self.production()
        if current is not None:
            return current
        self.add(configured)
        with self._locked() as state:
            if "production" not in state.aliases:  # another run may have bootstrapped meanwhile
                self._move(state, "production", configured.digest, "first prompt version", {})
            production = state.aliases["production"]
        self._mirrored("first prompt version")
        return self.spec(production)

    # -- promotion ------------------------------------------------------------------------
    def release(
        self,
        spec: PromptSpec,
        evidence: dict[str, Any],
        promote: bool,
        expected_production: str | None,
        to: Literal["production", "canary"] = "production",
        weight: float | None = None,
    ) -> tuple[str, str | None]:
        """Register a candidate prompt, point ``candidate`` at it and, if ``promote``, ``to`` as well,
        in one atomic write that first checks production is still ``expected_production``.

        Returns:
            ``(action, previous)``: action ``promoted``, ``canary`` or ``kept``; previous is the
            version ``to`` pointed at before.

        Raises:
            StaleProduction: production moved since the candidate was judged against it.
            RevokedModel: the candidate was rolled back out of production before.
        """
        self.add(spec)
        if to == "canary" and promote and not (weight is not None and 0.0 < weight < 1.0):
            raise ConfigError(f"a canary needs a traffic weight between 0 and 1, got {weight}")
        with self._locked() as state:
            production = state.aliases.get("production")
            self._move(state, "candidate", spec.digest, "built", evidence)
            previous = state.aliases.get(to)
            if not promote or previous == spec.digest or (to == "canary" and production == spec.digest):
                action = "kept"
            else:
                if spec.digest in state.revoked:
                    raise RevokedModel(f"{spec.version} was rolled back ({state.revoked[spec.digest]}); not promoting")
                if production != expected_production:
                    raise StaleProduction(
                        f"production prompt is {_show(production)} but the candidate was judged against "
                        f"{_show(expected_production)}; re-run"
                    )
                moved = {**evidence, "traffic_weight": weight} if to == "canary" else evidence
                self._move(state, to, spec.digest, "gate passed", moved)
                action = "promoted" if to == "production" else "canary"
        self._mirrored(f"prompt release: {action}")
        return action, previous

    def point(self, alias: str, ref: str, reason: str, weight: float | None = None) -> AliasMove:
        """Point an alias at a registered version by hand (``prompts promote``); a canary needs a weight."""
        if alias not in ALIASES:
            raise ConfigError(f"unknown alias {alias!r}; known: {list(ALIASES)}")
        if alias == "canary" and not (weight is not None and 0.0 < weight < 1.0):
            raise ConfigError(f"a canary needs --weight between 0 and 1, got {weight}")
        with self._locked() as state:
            digest = self.resolve(ref, state)
            if alias == "production" and digest in state.revoked:
                raise RevokedModel(f"{self.name}@{short(digest)} was rolled back ({state.revoked[digest]})")
            previous = state.aliases.get(alias)
            evidence = {"traffic_weight": weight} if alias == "canary" else {}
            self._move(state, alias, digest, reason, evidence)
        self._mirrored(reason)
        return AliasMove(at="", alias=alias, previous=previous, current=digest, reason=reason)

    # The inherited writes, mirrored after the local state (the truth) has moved.
    def set_alias(self, alias: str, digest: str, reason: str) -> AliasMove:
        move = super().set_alias(alias, digest, reason)
        self._mirrored(reason)
        return move

    def rollback(self, alias: str, reason: str) -> AliasMove:
        move = super().rollback(alias, reason)
        self._mirrored(f"rollback: {reason}")
        return move

    def _mirrored(self, reason: str) -> None:
        if self._mirror is not None:
            self._mirror.mirror(reason)


def open_prompt_registry(
    settings: RegistrySettings, registry_root: Path, name: str, signing: ArtifactSigning | None = None
) -> PromptRegistry:
    """The registry of one prompt, mirrored to W&B when ``registry.backend`` is ``wandb``; with ``signing``,
    versions are signed when added and verified when served.

    Raises:
        ConfigError: the W&B mirror is asked for but cannot be used.
    """
    return PromptRegistry(registry_root, name, settings, signing)


def canary_traffic(state: RegistryState) -> dict[str, float]:
    """``{"canary": weight}`` while a canary differs from production, else ``{}``."""
    canary = state.aliases.get("canary")
    if canary is None or canary == state.aliases.get("production"):
        return {}
    arrival = next(
        (m for m in reversed(state.history) if m.alias == "canary" and m.current == canary and m.kind == "move"),
        None,
    )
    weight = arrival.evidence.get("traffic_weight") if arrival else None
    return {"canary": float(weight)} if isinstance(weight, int | float) and 0.0 < weight < 1.0 else {}


def _lineage(spec: PromptSpec) -> dict[str, Any]:
    return {"name": spec.name, "version": spec.version, "spec": spec.model_dump(mode="json")}


def _show(digest: str | None) -> str:
    return short(digest) if digest else "none"

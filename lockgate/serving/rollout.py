"""What a deployment serves, decided from the registry; and the canary rollback that undoes it.

Rules: the registry's ``production`` alias is the model the gate approved. A deploy serves it
to everybody, or, as a canary, to ``canary_weight`` of the traffic while the model that is
serving now keeps the rest. A canary rolled back gives all traffic to the serving model
again and moves the registry's ``canary`` and ``production`` aliases back (rolling
production back revokes the canary's model, so the gate will not promote it again by itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate.digest import short
from lockgate.errors import DataError
from lockgate.registry import ModelRegistry, ModelVersion
from lockgate.registry.prompts import PromptRegistry
from lockgate.serving.manifest import ServingManifest, Variant, VariantName, now_iso

log = logging.getLogger(__name__)

CANARY_ROLLED_BACK = "lockgate.canary.rolled_back"

# (event name, resource, payload): the orchestrator's emitter is injected, the library imports none.
Emitter = Callable[[str, dict[str, str], dict[str, Any]], None]


def served_name(digest: str) -> str:
    """The model name vLLM serves a registry version under."""
    return "lockgate-" + short(digest)


def variant_for(
    version: ModelVersion,
    name: str,
    weight: float,
    engine_url: str,
    index_uri: str | None,
    index_collection: str | None,
    prompt_version: str,
    adapter_path: str | None = None,
    model_path: str | None = None,
) -> Variant:
    """A manifest variant for a registry version."""
    return Variant(
        name=name,  # type: ignore[arg-type]
        model_digest=version.digest,
        served_model=served_name(version.digest),
        engine_url=engine_url,
        model_path=model_path or version.path,
        adapter_path=adapter_path,
        prompt_version=prompt_version,
        index_uri=index_uri,
        index_collection=index_collection,
        weight=weight,
    )


def promoted_prompt_version(registry: ModelRegistry, digest: str, default: str) -> str:
    """The prompt version the gate judged this model with (from its promotion's evidence)."""
    for move in reversed(registry.history()):
        if move.current == digest and move.alias == "production":
            lineage = move.evidence.get("lineage")
            if isinstance(lineage, dict) and lineage.get("prompt_version"):
                return str(lineage["prompt_version"])
    return default


@dataclass(frozen=True)
class PromptCanary:
    """A prompt version the prompt registry sends ``weight`` of the traffic to, with production's model."""

    version: str
    weight: float


def prompt_canary(prompts: PromptRegistry) -> PromptCanary | None:
    """The prompt registry's canary and its traffic weight (``PromptRegistry.traffic``), or None without one."""
    weight = prompts.traffic().get("canary")
    if weight is None:
        return None
    return PromptCanary(version=prompts.spec("canary").version, weight=weight)


@dataclass(frozen=True)
class PlannedVariant:
    """One variant of the manifest to come, before its engine is known."""

    name: VariantName
    version: ModelVersion
    weight: float
    prompt_version: str


def plan_variants(
    registry: ModelRegistry,
    production: ModelVersion,
    stable: ModelVersion | None,
    canary_weight: float,
    default_prompt_version: str,
    prompts: PromptCanary | None = None,
    production_prompt: str | None = None,
) -> list[PlannedVariant]:
    """The variants a deploy serves, each model with the prompt the gate judged it with.

    Production's model answers with ``production_prompt`` (the prompt registry's production: a
    prompt-only release gates it with that model, and a model release is evaluated with it), else
    the prompt recorded at the model's promotion. A model canary (``stable`` keeps ``1 - canary_weight``,
    with the prompt it was promoted with) comes first; without one, a prompt canary serves
    production's model with the canary prompt to ``prompts.weight`` of the traffic.
    """
    prompt = production_prompt or promoted_prompt_version(registry, production.digest, default_prompt_version)
    if stable is not None:
        stable_prompt = promoted_prompt_version(registry, stable.digest, default_prompt_version)
        return [
            PlannedVariant("production", stable, 1 - canary_weight, stable_prompt),
            PlannedVariant("canary", production, canary_weight, prompt),
        ]
    if prompts is not None and 0.0 < prompts.weight < 1.0 and prompts.version != prompt:
        return [
            PlannedVariant("production", production, 1 - prompts.weight, prompt),
            PlannedVariant("canary", production, prompts.weight, prompts.version),
        ]
    return [PlannedVariant("production", production, 1.0, prompt)]


def is_prompt_canary(manifest: ServingManifest) -> bool:
    """Whether the manifest's canary is a prompt canary: production's model with another prompt."""
    canary = manifest.canary
    return canary is not None and canary.model_digest == manifest.production.model_digest


def plan_rollout(
    production: ModelVersion | None,
    live: ServingManifest | None,
    canary_weight: float,
    revoked: Callable[[str], str | None],
) -> tuple[str | None, str]:
    """Which model keeps the stable share, if any, and why.

    Returns:
        ``(stable_digest, mode)``: ``stable_digest`` is None for a full rollout; mode is
        ``canary``, ``full`` or ``unchanged``.

    Raises:
        DataError: nothing has been promoted yet.
    """
    if production is None:
        raise DataError("registry: no model is in production yet; run the release pipeline first")
    serving = live.production.model_digest if live else None
    if serving == production.digest:
        return None, "unchanged" if live is not None and live.canary is None else "full"
    if canary_weight <= 0 or serving is None or revoked(serving):
        return None, "full"
    return serving, "canary"


def roll_back_canary(
    manifest: ServingManifest,
    registry: ModelRegistry,
    emit: Emitter,
    reason: str,
    prompts: PromptRegistry | None = None,
) -> ServingManifest:
    """The manifest with all traffic on production; registry aliases moved back; the event sent.

    A prompt canary (production's model with another prompt) moves no model alias: production's
    model is not what failed. With ``prompts``, that prompt registry's ``canary`` is pointed back at
    its production version (no split). The caller writes the returned manifest (before this
    returns nothing serves differently), and calls this as the ``decide`` of ``swap_manifest``:
    under the deploy lock, on the manifest it judged, so no deploy is moving aliases or replacing
    the manifest while this decides (the gateway does: ``Gateway._judge_canary``).
    """
    canary = manifest.canary
    if canary is None:
        return manifest
    moved: list[str] = []
    if is_prompt_canary(manifest):
        if prompts is not None and (production := prompts.get("production")) is not None:
            current = prompts.get("canary")
            if current is not None and prompts.spec("canary").version == canary.prompt_version:
                prompts.set_alias("canary", production.digest, reason=reason)
                moved.append(f"prompt {prompts.name} canary")
    else:
        state = registry.snapshot()
        if state.aliases.get("canary") == canary.model_digest:
            registry.rollback("canary", reason=reason)
            moved.append("canary")
        if state.aliases.get("production") == canary.model_digest:
            registry.rollback("production", reason=reason)
            moved.append("production")
    emit(
        CANARY_ROLLED_BACK,
        {"prefect.resource.id": "lockgate.model." + short(canary.model_digest)},
        {
            "canary": canary.model_digest,
            "production": manifest.production.model_digest,
            "prompt": canary.prompt_version,
            "reason": reason,
            "aliases_moved": moved,
        },
    )
    log.warning("canary %s rolled back: %s", canary.served_model, reason)
    return manifest.without_canary(reason)


def record_canary_alias(registry: ModelRegistry, digest: str) -> None:
    """Point the registry's ``canary`` alias at the model now taking canary traffic."""
    current = registry.get("canary")
    if current is None or current.digest != digest:
        registry.set_alias("canary", digest, reason="deployed as canary")


def manifest_path_default(home: Path) -> Path:
    return home / "serving" / "manifest.json"


def stamp(manifest: ServingManifest, reason: str) -> ServingManifest:
    return manifest.model_copy(update={"created_at": now_iso(), "reason": reason})

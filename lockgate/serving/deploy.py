"""The deploy stage's rules: which engines a rollout needs, and how it goes live.

Order matters: engines are started (or reused) and smoke-tested first; only then is the
manifest replaced, in one atomic write the gateway picks up; engines nothing serves any more
are stopped after ``drain_s``, so requests already on them finish. A failed smoke test stops
what this deploy started and leaves the previous manifest, and the engines behind it, serving.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lockgate.errors import DataError, StageError
from lockgate.registry import ModelRegistry, ModelVersion
from lockgate.serving.manifest import DEPLOY_LOCK, ServingManifest, Variant, load_manifest, now_iso, writer_lock
from lockgate.serving.rollout import PromptCanary, plan_rollout, plan_variants, served_name, variant_for
from lockgate.serving.vllm import (
    EngineBook,
    EngineSpec,
    RunningEngine,
    cannot_run_here,
    free_port,
    smoke_test,
    start_engine,
    stop_engine,
)
from lockgate.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy: the registry's production model, fully or as a canary."""

    canary_weight: float
    default_prompt_version: str
    index_uri: str | None
    index_collection: str | None


@dataclass(frozen=True)
class DeployOutcome:
    manifest: ServingManifest
    mode: str
    started: list[RunningEngine]
    smoke: list[str]


def live_manifest(path: Path) -> ServingManifest | None:
    return load_manifest(path) if path.is_file() else None


def wanted_models(
    registry: ModelRegistry, live: ServingManifest | None, canary_weight: float
) -> tuple[ModelVersion, ModelVersion | None, str]:
    """``(production, stable or None, mode)`` for this rollout."""
    production = registry.get("production")
    stable_digest, mode = plan_rollout(production, live, canary_weight, registry.revoked_reason)
    assert production is not None  # plan_rollout raised otherwise
    stable = registry.snapshot().versions.get(stable_digest) if stable_digest else None
    return production, stable, mode


def adapter_base(path: str) -> str | None:
    """The base model a PEFT adapter folder was trained on, or None if ``path`` is a full model.

    Raises:
        DataError: an adapter that does not name its base model.
    """
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise DataError(f"{config}: the adapter does not name its base model (base_model_name_or_path)")
    return str(base)


def engine_specs(versions: list[ModelVersion]) -> tuple[list[EngineSpec], dict[str, tuple[int, str, str | None]]]:
    """The engines a set of versions needs: a full model gets its own engine; adapters of one
    base share the base's engine, each loaded by name (multi-LoRA).

    Returns:
        ``(specs, placement)`` with placement ``digest -> (spec index, served name, adapter path)``.
    """
    specs: list[EngineSpec] = []
    placement: dict[str, tuple[int, str, str | None]] = {}
    by_base: dict[str, int] = {}
    for version in versions:
        name = served_name(version.digest)
        base = adapter_base(version.path)
        if base is None:
            specs.append(EngineSpec(model_path=version.path, served_model=name))
            placement[version.digest] = (len(specs) - 1, name, None)
            continue
        if base not in by_base:
            specs.append(EngineSpec(model_path=base, served_model="lockgate-base"))
            by_base[base] = len(specs) - 1
        index = by_base[base]
        spec = specs[index]
        specs[index] = EngineSpec(spec.model_path, spec.served_model, (*spec.loras, (name, version.path)))
        placement[version.digest] = (index, name, version.path)
    return specs, placement


def servable_here(spec: EngineSpec, python: str) -> EngineSpec:
    """``spec``, or the same engine on the merged (un-quantized) model kept beside its quantized one
    where this machine's vLLM cannot run the quantized model (4-bit weights on a CPU without
    AVX-512), said in one warning line.

    Raises:
        StageError: the model cannot run here and no merged model lies beside it.
    """
    why = cannot_run_here(python, spec.model_path)
    if why is None:
        return spec
    from lockgate.quantize import merged_beside

    merged = merged_beside(Path(spec.model_path))
    if merged is None:
        raise StageError(
            f"deploy: {spec.model_path} cannot be served on this machine: {why}; quantize with "
            "quantization.scheme W8A8, or serve it where AVX-512 (or a GPU) is"
        )
    log.warning("deploy: %s; %s serves the merged model beside it (%s)", why, spec.served_model, merged)
    return EngineSpec(str(merged), spec.served_model, spec.loras)


def served_folders(specs: list[EngineSpec]) -> list[Path]:
    """The local paths a set of engines would load: each model and adapter that is on this machine (a
    hub id is pinned by its revision elsewhere; a path that is not there fails at the engine), once
    each, in order."""
    folders: list[Path] = []
    for spec in specs:
        for path in (spec.model_path, *(adapter for _, adapter in spec.loras)):
            if Path(path).exists() and Path(path) not in folders:
                folders.append(Path(path))
    return folders


@contextmanager
def deploy_lock(folder: Path, wait_s: float, poll_s: float = 0.5) -> Iterator[None]:
    """One deploy at a time per serving folder.

    A deploy starts engines, switches the manifest, then stops the engines its manifest does not
    use; two interleaved, one would stop the engines the other had just smoke-tested and is about
    to send traffic to. A second deploy waits up to ``wait_s`` seconds (and says so once).

    It is the manifest's writer lock (``writer_lock``): the gateway's canary rollback takes it too,
    without waiting, so while a deploy holds it no rollback is decided or written.

    Raises:
        StageError: the lock was still held after ``wait_s`` seconds (the lock file named).
    """
    path = folder / DEPLOY_LOCK
    waiting = partial(log.info, "another deploy is running (%s); waiting up to %gs", path, wait_s)
    with writer_lock(folder, wait_s, waiting, poll_s) as held:
        if not held:
            raise StageError(
                f"another deploy still holds {path} after {wait_s:g}s (serving.deploy_wait_s); "
                "run this one again when it has finished"
            )
        yield


def deploy(
    registry: ModelRegistry,
    settings: ServingSettings,
    request: DeployRequest,
    manifest_path: Path,
    engines_book: Path,
    logs: Path,
    prompts: PromptCanary | None = None,
    production_prompt: str | None = None,
    verify: Callable[[Path], object] | None = None,
) -> DeployOutcome:
    """Start or reuse the engines, smoke-test them, then switch the manifest.

    With ``verify`` (``lockgate.signing.verify_artifact`` bound to the trusted signer), every folder
    to be served is checked first; what it raises (``TamperedError``) ends the deploy before an engine
    starts, the previous deployment still serving.

    Production's model answers with ``production_prompt`` (the prompt registry's production) when
    given. Without a model canary, a prompt canary (``prompts``, from the prompt registry) serves
    production's model with the canary prompt to its share of the traffic (see ``plan_variants``).

    Raises:
        DataError: nothing is in production.
        StageError: an engine did not start or failed its smoke test (the previous deployment keeps serving).
        TamperedError: a folder to be served is not what was signed (raised by ``verify``).
    """
    live = live_manifest(manifest_path)
    production, stable, mode = wanted_models(registry, live, request.canary_weight)
    book = EngineBook(engines_book)
    running = book.read()
    started: list[RunningEngine] = []
    specs, placement = engine_specs([v for v in (stable, production) if v is not None])
    if settings.engine != "external":
        specs = [servable_here(spec, settings.vllm_python) for spec in specs]
    if verify is not None:
        for folder in served_folders(specs):
            verify(folder)
    urls: list[str] = []
    try:
        for spec in specs:
            if settings.engine == "external":
                urls.append(settings.engine_url.rstrip("/"))
                continue
            reuse = next((e for e in running + started if e.spec_key == spec.key), None)
            if reuse is None:
                reuse = start_engine(
                    settings.vllm_python,
                    spec,
                    free_port(settings.engine_port),
                    settings.max_model_len,
                    settings.max_lora_rank,
                    settings.kv_cache_gib,
                    logs / f"vllm-{spec.served_model}-{len(started)}.log",
                    settings.start_timeout_s,
                )
                started.append(reuse)
            urls.append(reuse.url)

        def place(version: ModelVersion, name: str, weight: float, prompt: str) -> Variant:
            index, served, adapter = placement[version.digest]
            return variant_for(
                version,
                name,
                weight,
                urls[index],
                request.index_uri,
                request.index_collection,
                prompt,
                adapter_path=adapter,
                model_path=specs[index].model_path,
            ).model_copy(update={"served_model": served})

        weight = request.canary_weight if stable is not None else 0.0
        planned = plan_variants(
            registry, production, stable, weight, request.default_prompt_version, prompts, production_prompt
        )
        variants = [place(p.version, p.name, p.weight, p.prompt_version) for p in planned]
        if stable is None and len(variants) == 2:
            mode = "prompt canary"
        manifest = ServingManifest(
            variants=tuple(variants), max_model_len=settings.max_model_len, created_at=now_iso(), reason=mode
        )
        smoke = []
        for v in manifest.variants:
            result = smoke_test(v.engine_url, v.served_model, "Question: what is Quillstone?\nAnswer:")
            if not result.passed:
                raise StageError(f"smoke test of {v.name} ({v.served_model}) failed: {result.detail}")
            smoke.append(result.detail)
    except BaseException:
        for engine in started:
            stop_engine(engine.pid)
        raise
    book.write(running + started)
    return DeployOutcome(manifest=manifest, mode=mode, started=started, smoke=smoke)


def retire_engines(manifest: ServingManifest, engines_book: Path) -> list[RunningEngine]:
    """Stop the engines this machine started that the manifest no longer uses; returns them."""
    book = EngineBook(engines_book)
    running = book.read()
    used = {v.engine_url for v in manifest.variants}
    idle = [e for e in running if e.url not in used]
    for engine in idle:
        stop_engine(engine.pid)
    book.write([e for e in running if e.url in used])
    return idle

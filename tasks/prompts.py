"""Tasks of a prompt-only release: which prompt, with which model, the gate, and the promotion."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from lockgate import events
from lockgate.digest import short
from lockgate.errors import ConfigError
from lockgate.evaluate import ModelUnderTest, merged_twin
from lockgate.gates import commit_decision, decide_prompt, promotion_evidence
from lockgate.policy import GatePolicy
from lockgate.prompts import PromptSpec, find_prompt, find_prompt_version
from lockgate.records import EvalReport, GateDecision, ReleaseLineage
from lockgate.registry import ModelVersion
from lockgate.settings import PromptSettings
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE
from tasks.release import publish_decision


@task(name="candidate-prompt")
def candidate_prompt(*, prompts_dir: str, name: str, digest: str | None) -> PromptSpec:
    """The prompt file to release: the version an event named (it must still be in the file), else the file."""
    if digest:
        spec, path = find_prompt_version(Path(prompts_dir), digest)
        if spec.name != name:
            raise ConfigError(f"{path}: version {spec.version} is prompt {spec.name!r}, not {name!r}")
    else:
        spec, path = find_prompt(Path(prompts_dir), name)
    get_run_logger().info("candidate prompt %s from %s", spec.version, path)
    return spec


@task(name="production-model", cache_policy=DEFAULT_BUT_WORKSPACE)
def production_model(*, workspace: Workspace) -> ModelVersion:
    """The model in production: a prompt-only release evaluates with it and trains nothing.

    Raises:
        ConfigError: nothing is in production yet (run the release flow first).
    """
    production = workspace.registry.get("production")
    if production is None:
        raise ConfigError(
            "no model is in production yet: a prompt-only release evaluates with production's model; "
            "run the release flow first"
        )
    # Registered under another store root if the state folder moved.
    return production.model_copy(update={"path": workspace.artifacts.locate(production.path)})


@task(name="prompt-gate", cache_policy=DEFAULT_BUT_WORKSPACE)
def gate_prompt(
    *,
    evaluation: EvalReport,
    policy: GatePolicy,
    expected: ReleaseLineage,
    candidate: PromptSpec,
    production: PromptSpec,
    workspace: Workspace,
) -> GateDecision:
    """The release policy applied to a candidate prompt against the production prompt (fails closed)."""
    logger = get_run_logger()
    prompts = workspace.prompts(candidate.name)
    decision = decide_prompt(
        evaluation, policy, expected, production.version, revoked=prompts.revoked_reason(candidate.digest)
    )
    publish_decision(decision)
    for check in decision.checks:
        (logger.info if check.passed else logger.warning)("gate %s: %s", check.name, check.detail)
    emit_event(
        event=events.GATE_PASSED if decision.passed else events.GATE_REJECTED,
        resource=events.prompt_resource(candidate.name),
        payload={
            "decision": decision.digest,
            "prompt": candidate.version,
            "policy": decision.policy_digest,
            "reasons": list(decision.reasons),
            "metrics": decision.metrics,
        },
    )
    return decision


@task(name="promote-prompt", cache_policy=DEFAULT_BUT_WORKSPACE)
def promote_prompt(
    *,
    decision: GateDecision,
    candidate: PromptSpec,
    production: PromptSpec,
    prompts: PromptSettings,
    workspace: Workspace,
    dry_run: bool = False,
) -> tuple[str, str | None, dict[str, float]]:
    """Register the candidate prompt and, only if the gate passed, move ``production`` (or ``canary``,
    with its traffic weight) to it, in one atomic write that checks production is still ``production``.

    Returns ``(action, production version after, traffic)``.
    """
    logger = get_run_logger()
    registry_of = workspace.prompts(candidate.name)
    if dry_run:
        logger.info("dry run: %s; nothing moved", "would promote" if decision.passed else "would keep production")
        return "dry_run", production.version, registry_of.traffic()
    evidence = promotion_evidence(decision)
    decided = commit_decision(decision, workspace.artifacts)  # signed, as a model release's decision
    evidence["decision"] = {"path": str(decided), "digest": decision.digest}
    action, _ = registry_of.release(
        candidate,
        evidence,
        decision.passed,
        production.digest,
        to=prompts.promote_to,
        weight=prompts.canary_weight if prompts.promote_to == "canary" else None,
    )
    current = registry_of.production()
    if action in ("promoted", "canary"):
        emit_event(
            event=events.PROMPT_PROMOTED,
            resource=events.prompt_resource(candidate.name),
            payload={
                "alias": prompts.promote_to,
                "version": candidate.version,
                "digest": candidate.digest,
                "previous": production.version,
                "traffic": registry_of.traffic(),
                "decision": decision.digest,
            },
        )
    state = registry_of.snapshot()
    create_markdown_artifact(
        key="prompt-registry",
        markdown=f"# Prompt registry: {candidate.name}\n\n| alias | version |\n|---|---|\n"
        + "\n".join(f"| {a} | {candidate.name}@{short(d)} |" for a, d in sorted(state.aliases.items()))
        + f"\n\ntraffic: {registry_of.traffic() or 'no canary'}\n",
        description="Prompt aliases after this run",
    )
    logger.info("prompt promotion: %s (production = %s)", action, current.version if current else "none")
    return action, current.version if current else None, registry_of.traffic()


@task(name="matrix-contenders", cache_policy=DEFAULT_BUT_WORKSPACE)
def matrix_contenders(
    *, name: str, prompt_refs: list[str], model_aliases: list[str], prompts_dir: str, workspace: Workspace
) -> tuple[list[PromptSpec], list[ModelUnderTest]]:
    """The distinct prompt versions and registered models the names point at, in the order given; each
    alias after the first (the reference, production) also brings its merged, un-quantized twin, so the
    matrix shows champion, challenger and quantized challenger side by side.

    Raises:
        ConfigError: a prompt reference matches nothing, or no model alias points at a model.
    """
    logger = get_run_logger()
    prompt_registry = workspace.prompts(name)
    prompts: dict[str, PromptSpec] = {}
    for ref in prompt_refs:
        spec = find_prompt(Path(prompts_dir), name)[0] if ref == "file" else prompt_registry.spec(ref)
        prompts.setdefault(spec.digest, spec)
    models: dict[str, ModelUnderTest] = {}
    store = workspace.artifacts
    for position, alias in enumerate(model_aliases):
        version = workspace.registry.get(alias)
        if version is None:
            logger.info("no model is %s; left out of the matrix", alias)
            continue
        label = f"{alias} {short(version.digest)}"
        model = ModelUnderTest(label, version.digest, store.locate(version.path), True)
        models.setdefault(version.digest, model)
        twin = merged_twin(model) if position > 0 else None
        if twin is not None:
            models.setdefault(twin.digest, twin)
        elif position > 0:
            logger.info("%s has no merged twin beside it; only its quantized model is in the matrix", label)
    if not models:
        raise ConfigError(f"no model registry alias of {model_aliases} points at a model; run the release flow first")
    return list(prompts.values()), list(models.values())

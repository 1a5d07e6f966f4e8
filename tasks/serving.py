"""Deploy tasks: start and smoke-test engines, switch the serving manifest, retire old engines."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from lockgate.digest import short
from lockgate.errors import ConfigError
from lockgate.serving import write_manifest
from lockgate.serving.deploy import DeployOutcome, DeployRequest, deploy, retire_engines
from lockgate.serving.manifest import ServingManifest
from lockgate.serving.retrieval import PromptBook
from lockgate.serving.rollout import PromptCanary, is_prompt_canary, prompt_canary, record_canary_alias
from lockgate.settings import LockgateSettings
from lockgate.signing import TamperedError, VerifiedArtifact, open_signing, verify_artifact
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, report_tampered


@task(name="auto-deploy-check")
def wanted_by_promotion(*, settings: LockgateSettings, promoted: str) -> bool:
    """A run a promotion event started deploys only with ``serving.auto_deploy`` on; off, one line says so."""
    if settings.serving.auto_deploy:
        return True
    get_run_logger().info(
        "serving.auto_deploy is off: %s is not deployed (serve it with `python -m flows deploy`)", promoted
    )
    return False


def servable_prompts(settings: LockgateSettings, workspace: Workspace) -> tuple[PromptCanary | None, str | None]:
    """The prompt registry's canary (with its traffic weight) and production version, each only if
    the gateway can render it (else None, logged): one it cannot render must not go live."""
    prompts = workspace.prompts(settings.prompts.name)
    book = PromptBook(settings.resolve(settings.prompts.dir), workspace.registry_root, workspace.signing)

    def servable(version: str, role: str) -> bool:
        try:
            book.render(version, "question", "context")
        except ConfigError as exc:
            get_run_logger().warning("%s prompt %s left out: %s", role, version, exc)
            return False
        return True

    canary = prompt_canary(prompts)
    production = prompts.get("production")
    production_version = prompts.spec("production").version if production is not None else None
    return (
        canary if canary is not None and servable(canary.version, "canary") else None,
        production_version if production_version is not None and servable(production_version, "production") else None,
    )


def signature_checker(settings: LockgateSettings, boundary: str) -> Callable[[Path], VerifiedArtifact]:
    """Verify an artifact folder against the trusted signer; a refusal is reported (log line and event)
    before it is raised."""
    signing = open_signing(settings.signing, settings.resolve)
    check = partial(verify_artifact, signing)

    def verified(path: Path) -> VerifiedArtifact:
        try:
            result = check(path)
        except TamperedError as refused:
            report_tampered(refused, boundary)
            raise
        get_run_logger().info(
            "%s: %s verified (%d files, signature %s)",
            boundary,
            result.artifact,
            result.files,
            short(result.signature_digest),
        )
        return result

    return verified


@task(name="start-and-smoke-test", cache_policy=DEFAULT_BUT_WORKSPACE)
def start_and_smoke_test(*, settings: LockgateSettings, request: DeployRequest, workspace: Workspace) -> DeployOutcome:
    """Verify every folder to be served against its signature, then start (or reuse) a vLLM engine per
    served model and smoke-test each; nothing goes live yet. A tampered or unsigned folder fails the
    task before any engine starts (``lockgate.artifact.tampered`` emitted), the old deployment serving.

    Production's model answers with the prompt registry's production prompt (a prompt-only release
    reaches serving this way). A canary prompt in the prompt registry (``prompts promote --to
    canary``, or a prompt release with ``prompts.promote_to: canary``) is served with production's
    model to its share of the traffic, unless a model canary is in progress.
    """
    logger = get_run_logger()
    where = workspace.serving
    canary, production = servable_prompts(settings, workspace)
    serving = settings.serving_settings()
    outcome = deploy(
        workspace.registry,
        serving,
        request,
        where.manifest,
        where.engines,
        where.logs,
        canary,
        production,
        verify=signature_checker(settings, "deploy"),
    )
    for line in outcome.smoke:
        logger.info("smoke test passed: %s", line)
    return outcome


@task(name="switch-manifest", cache_policy=DEFAULT_BUT_WORKSPACE)
def switch_manifest(*, outcome: DeployOutcome, workspace: Workspace) -> ServingManifest:
    """Replace the serving manifest atomically (the gateway re-reads it) and point ``canary`` at a canary."""
    where = workspace.serving
    write_manifest(where.manifest, outcome.manifest)
    canary = outcome.manifest.canary
    if canary is not None and not is_prompt_canary(outcome.manifest):  # a prompt canary's model is production's
        record_canary_alias(workspace.registry, canary.model_digest)
    rows = "\n".join(
        f"| {v.name} | `{short(v.model_digest)}` | {v.served_model} | {v.prompt_version} | {v.index_collection} "
        f"| {v.weight:.0%} | {v.engine_url} |"
        for v in outcome.manifest.variants
    )
    create_markdown_artifact(
        key="serving-manifest",
        markdown=f"# Serving ({outcome.mode})\n\n| variant | model | served as | prompt | index | traffic | engine |\n"
        f"|---|---|---|---|---|---|---|\n{rows}\n",
        description="What the gateway serves now",
    )
    get_run_logger().info("serving manifest switched (%s): %s", outcome.mode, where.manifest)
    return outcome.manifest


@task(name="retire-engines", cache_policy=DEFAULT_BUT_WORKSPACE)
def retire(*, settings: LockgateSettings, manifest: ServingManifest, workspace: Workspace) -> int:
    """After ``serving.drain_s`` (in-flight requests finish), stop engines nothing serves any more."""
    time.sleep(settings.serving.drain_s)
    stopped = retire_engines(manifest, workspace.serving.engines)
    for engine in stopped:
        get_run_logger().info("stopped engine %s (pid %d)", engine.url, engine.pid)
    return len(stopped)

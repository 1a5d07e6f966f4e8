"""The deploy flow: serve what the gate promoted, through vLLM behind the gateway."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from flows.params import StageParams
from lockgate.prompts import GROUNDED_QA
from lockgate.serving.deploy import DeployRequest, deploy_lock
from lockgate.stores.aliases import serving_collection
from lockgate.workspace import Workspace
from tasks.serving import retire, start_and_smoke_test, switch_manifest, wanted_by_promotion


class DeployParams(StageParams):
    """What to deploy: the registry's production model, to everybody or first as a canary."""

    canary_weight: float | None = Field(
        default=None,
        ge=0.0,
        le=0.5,
        description="Share of traffic the newly promoted model gets while the serving model keeps the rest "
        "(0: everybody at once; empty: serving.canary_weight).",
    )
    drain_s: float | None = Field(
        default=None,
        ge=0.0,
        le=3600,
        description="Seconds engines nothing serves any more keep running after the switch, for requests "
        "on them (empty: serving.drain_s).",
    )
    promoted: str | None = Field(
        default=None,
        description="Set by promotion events: the promoted model's event resource. "
        "Such a run deploys only with serving.auto_deploy on.",
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        if self.drain_s is not None:
            out["serving"] = {"drain_s": self.drain_s}
        return out


@flow(name="deploy", log_prints=False)
def deploy(params: DeployParams = DeployParams()) -> dict[str, Any]:  # noqa: B008 (the UI form's default)
    """Serve the production model: start or reuse its vLLM engine, smoke-test it, then switch the
    gateway's manifest (as a canary beside the serving model, or to everybody). A failed smoke
    test fails the run and leaves the previous deployment serving. A run started by a promotion
    event does nothing but say so while serving.auto_deploy is off.
    """
    settings = params.settings()
    if params.promoted is not None and not wanted_by_promotion(settings=settings, promoted=params.promoted):
        return {"mode": "skipped", "manifest": None, "variants": []}
    # Opened only past the auto_deploy check: a skipped run leaves the state folder as it was.
    workspace = Workspace.open(settings)
    weight = settings.serving.canary_weight if params.canary_weight is None else params.canary_weight
    request = DeployRequest(
        canary_weight=weight,
        default_prompt_version=GROUNDED_QA.version,
        index_uri=workspace.index_uri,
        # Milvus follows a blue/green switch through its own alias; Pinecone has none, so the
        # serving namespace is resolved here (a later switch is served after the next deploy).
        index_collection=(
            settings.vector_store.collection
            if settings.vector_store.backend != "pinecone"
            else serving_collection(workspace.home, settings.vector_store.collection)
        ),
    )
    # Start, switch and retire as one: another deploy of this state folder waits (deploy_lock).
    with deploy_lock(workspace.serving.folder, settings.serving.deploy_wait_s):
        outcome = start_and_smoke_test(settings=settings, request=request, workspace=workspace)
        manifest = switch_manifest(outcome=outcome, workspace=workspace)
        retire(settings=settings, manifest=manifest, workspace=workspace)
    return {"mode": outcome.mode, "manifest": manifest.digest, "variants": [v.name for v in manifest.variants]}

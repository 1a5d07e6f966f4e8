"""Fine-tuning on its own: the flow a GPU work pool runs (see prefect.yaml, 'finetune-gpu'),
and how the release starts it there and waits (training.launcher: deployment)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.params import STAGE_DONE, FinetuneParams, TrainParams, TrainSummary, timings_and_outputs
from lockgate.digest import short
from lockgate.errors import StageError, TransientError
from lockgate.launchers.exits import WorkerExit, open_exit_probe
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot
from lockgate.settings import LockgateSettings, TrainingSettings
from lockgate.workspace import Workspace
from tasks.common import StageLog, fingerprints
from tasks.data import prepare_dataset, resolve_base_model
from tasks.training import finetune_adapter


@flow(name="finetune", persist_result=True, result_serializer="json")
def finetune(params: FinetuneParams = FinetuneParams()) -> AdapterArtifact:  # noqa: B008 (the UI form's default)
    """Prepare the data snapshot and train a LoRA adapter with Axolotl, here, on this worker.

    Complete checkpoints are copied to the checkpoint store (training.checkpoint_url) as they
    appear, so a run on a fresh worker after a preemption resumes from the newest one; the
    fine-tune holds the team's GPU quota (gpu-<team>) while it trains.
    """
    settings = params.settings()  # training.launcher is local here: this is the worker
    workspace = Workspace.open(settings)
    trained = prepare_and_train(
        stages=StageLog(artifacts=workspace.artifacts),
        settings=settings,
        workspace=workspace,
        params=TrainParams(profile=params.profile, home=params.home, scenario=params.scenario),
        trainer_env=fingerprints(settings).trainer_env,
    )
    return trained.adapter


@dataclass(frozen=True)
class Trained:
    """What the first three stages of a release made."""

    snapshot: DatasetSnapshot
    base: BaseModelArtifact
    adapter: AdapterArtifact


def prepare_and_train(
    *, stages: StageLog, settings: LockgateSettings, workspace: Workspace, params: TrainParams, trainer_env: str
) -> Trained:
    """Prep, base model and fine-tune, each timed in ``stages``: the fine-tune runs here, or on the
    work pool that training.launcher=deployment names (see :func:`train_on_pool`)."""
    with stages.timed("prep"):
        snapshot = prepare_dataset(sources=settings.sources, data=settings.data, workspace=workspace)
    with stages.timed("base model"):
        base = resolve_base_model(
            base_model=settings.training.base_model,
            license_=settings.training.base_license,
            shape=settings.base,
            corpus_dir=str(settings.resolve(settings.data.corpus_dir)),
            train_path=snapshot.train_path,
            workspace=workspace,
        )
    with stages.timed("finetune"):
        if settings.training.launcher == "deployment":
            adapter = train_on_pool(params.finetune_params(settings), settings.training)
        else:
            adapter = train_here(
                stages=stages,
                settings=settings,
                workspace=workspace,
                snapshot=snapshot,
                base=base,
                trainer_env=trainer_env,
                shuffle_labels=params.scenario == "shuffled-labels",
            )
    return Trained(snapshot=snapshot, base=base, adapter=adapter)


@flow(name="train", log_prints=False)
def train(params: TrainParams = TrainParams()) -> TrainSummary:  # noqa: B008 (the UI form's default)
    """Prepare the data and fine-tune a LoRA adapter, here or on the work pool training.launcher
    names, and stop there: nothing is quantized, evaluated, gated or promoted.

    A release of the same data and settings afterwards takes this adapter from cache.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    stages = StageLog(artifacts=workspace.artifacts)
    trained = prepare_and_train(
        stages=stages,
        settings=settings,
        workspace=workspace,
        params=params,
        trainer_env=fingerprints(settings).trainer_env,
    )
    summary = TrainSummary(
        adapter=trained.adapter,
        dataset=trained.snapshot.digest,
        timings_s={k: round(v, 2) for k, v in stages.seconds.items()},
        cached=stages.cached,
        outputs={"dataset": trained.snapshot.path, "adapter": trained.adapter.path},
    )
    create_markdown_artifact(
        key="finetune-summary", markdown=train_markdown(summary), description="What the fine-tune trained"
    )
    return summary


def train_markdown(summary: TrainSummary) -> str:
    """The end-of-run report of a fine-tune on its own, shown in the UI and printed by the CLI."""
    adapter = summary.adapter
    losses = ", ".join(
        f"{name} loss {value:.4f}"
        for name, value in (("eval", adapter.eval_loss), ("train", adapter.train_loss))
        if value is not None
    )
    lines = [
        f"# Fine-tune: adapter {short(adapter.digest)}, {adapter.steps} steps" + (f" ({losses})" if losses else ""),
        "",
        f"- base model: {adapter.base_model}",
        f"- preemptions: {adapter.preemptions} ({adapter.steps_redone} steps trained again)",
        "",
        "Not evaluated or gated: `lockgate release` does that, and takes this adapter from cache.",
        *timings_and_outputs(summary.timings_s, summary.cached, summary.outputs),
    ]
    return "\n".join(lines) + "\n"


def train_here(
    *,
    stages: StageLog,
    settings: LockgateSettings,
    workspace: Workspace,
    snapshot: DatasetSnapshot,
    base: BaseModelArtifact,
    trainer_env: str,
    shuffle_labels: bool,
) -> AdapterArtifact:
    """The finetune task in this process, through the stage log (a cached adapter made for
    another state folder is rebuilt here, not borrowed)."""
    return stages.run_cached(
        "finetune",
        finetune_adapter,
        snapshot=snapshot,
        base=base,
        training=settings.training,
        axolotl_bin=str(settings.resolve(settings.training.axolotl_bin)),
        trainer_env=trainer_env,
        workspace=workspace,
        shuffle_labels=shuffle_labels,
    )


def train_on_pool(params: FinetuneParams, training: TrainingSettings) -> AdapterArtifact:
    """Start the finetune deployment on its work pool, wait, and re-submit it when its worker
    vanished (the run Crashed: a killed container, a reclaimed spot node), up to
    ``training.max_resubmits`` times. Each re-submission resumes from the durable checkpoints.

    Raises:
        StageError: the fine-tune failed for a reason a re-run will not fix.
        TransientError: it crashed more often than allowed.
    """
    logger = get_run_logger()
    crashes = 0
    while True:
        run = run_deployment(
            training.deployment,
            parameters={"params": params.model_dump(mode="json")},
            job_variables=training.job_variables or None,
            timeout=None,
            as_subflow=True,
        )
        state = run.state
        if state is not None and state.is_completed():
            adapter = state.result()
            assert isinstance(adapter, AdapterArtifact)
            logger.info("fine-tune run %s: adapter %s after %d crash(es)", run.name, short(adapter.digest), crashes)
            logger.info("fine-tune on the pool done", extra={STAGE_DONE: "finetune"})
            # The worker counts the restarts its disk saw; a fresh worker's disk saw none of them.
            return adapter.model_copy(update={"preemptions": max(adapter.preemptions, crashes)})
        name = state.name if state is not None else "unknown"
        message = (state.message if state is not None else None) or ""
        if state is None or not state.is_crashed():
            raise StageError(f"fine-tune run {run.name} ended {name}: {message}".strip())
        cause = _why_crashed(run)
        if cause is not None and cause.out_of_memory:
            raise StageError(
                f"fine-tune run {run.name} ran out of memory: {cause.detail}. Not re-submitted: it would run out "
                "again. Give the pool more memory (job variable mem_limit, or the pod's resources) or lower "
                "training.micro_batch_size / training.sequence_len"
            )
        crashes += 1
        if crashes > training.max_resubmits:
            raise TransientError(f"fine-tune crashed {crashes} times (training.max_resubmits={training.max_resubmits})")
        logger.warning(
            "fine-tune run %s crashed (%s%s); re-submitting (%d/%d)",
            run.name,
            message,
            f"; {cause.detail}" if cause else "",
            crashes,
            training.max_resubmits,
        )


def _why_crashed(run: FlowRun) -> WorkerExit | None:
    """Ask the run's infrastructure (by its work pool's type) whether it was out of memory."""
    if not run.work_pool_name:
        return None
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(run.work_pool_name)
    probe = open_exit_probe(pool.type)
    return probe.exit_of(str(run.id)) if probe is not None else None

"""The fine-tuning task: Axolotl through the launcher port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from lockgate.digest import short
from lockgate.finetune import finetune
from lockgate.launchers import open_launcher
from lockgate.prep import card_with_length_filter
from lockgate.records import AdapterArtifact, BaseModelArtifact, DatasetSnapshot
from lockgate.settings import TrainingSettings
from lockgate.workspace import Workspace
from tasks.common import StageCache, dataset_card_key, retry_transient


@task(
    name="finetune",
    # The trainer executable enters the key by its environment's content (trainer_env), not its path.
    cache_policy=StageCache(stage="finetune", modules=("lockgate.finetune",), ignore=("axolotl_bin", "workspace")),
    persist_result=True,
    result_serializer="json",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def finetune_adapter(
    *,
    snapshot: DatasetSnapshot,
    base: BaseModelArtifact,
    training: TrainingSettings,
    axolotl_bin: str,
    trainer_env: str,
    workspace: Workspace,
    shuffle_labels: bool = False,
) -> AdapterArtifact:
    """Train a LoRA adapter with Axolotl; a retry after preemption resumes from the last checkpoint.

    ``trainer_env`` is the digest of the environment behind ``axolotl_bin`` (for the cache key).
    """
    logger = get_run_logger()
    logger.info(
        "training %s steps of %s on %s (%d rows)", training.max_steps, training.adapter, base.name, snapshot.n_train
    )
    with gpu_quota(training.team, training.gpus):
        adapter = finetune(
            snapshot,
            base,
            training,
            workspace.artifacts,
            open_launcher("local", Path(axolotl_bin)),
            shuffle_labels=shuffle_labels,
        )
    logger.info("adapter %s: %d steps, final train loss %s", short(adapter.digest), adapter.steps, adapter.train_loss)
    create_markdown_artifact(
        key="adapter",
        markdown="\n".join(
            [
                "# Adapter",
                "",
                f"- digest: `{adapter.digest}`",
                f"- base: `{adapter.base_model}` `{adapter.base_digest}`",
                f"- dataset: `{adapter.dataset_digest}`",
                f"- config: `{adapter.config_digest}`",
                f"- steps: {adapter.steps}",
                f"- final train loss: {adapter.train_loss}",
                f"- resumed from: {adapter.resumed_from or 'no (fresh run)'}",
                f"- rows trained on: {adapter.rows_trained}, too long for sequence_len={training.sequence_len}: "
                f"{adapter.rows_too_long}",
                f"- path: `{adapter.path}`",
            ]
        ),
        description="The LoRA adapter and its lineage",
    )
    if adapter.rows_trained is not None:
        card = card_with_length_filter(
            Path(snapshot.card_path).read_text(encoding="utf-8"),
            base.name,
            training.sequence_len,
            adapter.rows_trained,
            adapter.rows_too_long,
        )
        create_markdown_artifact(
            key=dataset_card_key(snapshot.name),
            markdown=card,
            description="Dataset card, with the rows the length filter left out of training",
        )
    return adapter


@contextlib.contextmanager
def gpu_quota(team: str, gpus: int) -> Iterator[None]:
    """Hold ``gpus`` slots of the global concurrency limit ``gpu-<team>`` for the whole training.

    A team without a limit (none created by ``deployments/apply.sh``) trains unthrottled.
    """
    logger = get_run_logger()
    name = f"gpu-{team}"
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            logger.info("no GPU quota %s on this server: training unthrottled", name)
            yield
            return
    # One blocking acquisition. A first try with a timeout leaked slots: Prefect's timeout gives up
    # waiting, not the acquisition it queued, which could take the slot later with nobody to
    # release it (under load both of a team's fine-tunes then waited for a slot that never came).
    busy = limit.active_slots + gpus > limit.limit
    if busy:
        logger.info("waiting for %d GPU slot(s) of %s: the team's quota is in use", gpus, name)
    with concurrency(name, occupy=gpus):
        if busy:
            logger.info("got %d GPU slot(s) of %s", gpus, name)
        yield

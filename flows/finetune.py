"""Fine-tuning on its own: the flow a GPU work pool runs (see prefect.yaml, deployment 'finetune-gpu')."""

from __future__ import annotations

from prefect import flow

from flows.params import StageParams
from lockgate.records import AdapterArtifact
from tasks.common import fingerprints
from tasks.data import prepare_dataset, resolve_base_model
from tasks.training import finetune_adapter


@flow(name="finetune")
def finetune(params: StageParams = StageParams()) -> AdapterArtifact:  # noqa: B008 (the UI form's default)
    """Prepare the data snapshot and train a LoRA adapter with Axolotl.

    Checkpoints land in a work folder keyed by the inputs, and Prefect retries a preempted
    (killed) trainer, which then resumes from the last complete checkpoint. On Kubernetes that
    folder must be a persistent volume for a resume to survive a lost pod; the job template
    does not mount one yet.
    """
    settings = params.settings()
    artifacts_root = settings.artifacts_dir
    snapshot = prepare_dataset(settings.sources, settings.data, artifacts_root)
    corpus_dir = settings.resolve(settings.data.corpus_dir)
    base = resolve_base_model(
        settings.training.base_model, settings.base, str(corpus_dir), snapshot.train_path, artifacts_root
    )
    axolotl_bin = str(settings.resolve(settings.training.axolotl_bin))
    trainer_env = fingerprints(settings).trainer_env
    return finetune_adapter(snapshot, base, settings.training, axolotl_bin, artifacts_root, trainer_env)

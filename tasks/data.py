"""Tasks of the data side: dataset prep and the base model."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lockgate.basemodel import ensure_base_model
from lockgate.prep import load_jsonl, snapshot_dataset
from lockgate.records import BaseModelArtifact, DatasetSnapshot
from lockgate.settings import BaseModelSettings, DataSettings
from lockgate.store import LocalArtifactStore
from tasks.common import artifact_key, retry_transient


@task(name="prep-dataset", retries=1, retry_condition_fn=retry_transient)
def prepare_dataset(sources: list[str], data: DataSettings, artifacts_root: str) -> DatasetSnapshot:
    """Validate, clean, redact, dedupe and split the sources into a versioned snapshot."""
    logger = get_run_logger()
    snapshot = snapshot_dataset([Path(s) for s in sources], data, LocalArtifactStore(Path(artifacts_root)))
    logger.info(
        "dataset %s: %d train, %d eval, %d quarantined, %d duplicates, %d redactions",
        snapshot.digest[:19],
        snapshot.n_train,
        snapshot.n_eval,
        snapshot.n_quarantined,
        snapshot.n_duplicates,
        snapshot.n_redacted,
    )
    create_markdown_artifact(
        key=artifact_key(f"dataset-{data.name}"),
        markdown=Path(snapshot.card_path).read_text(encoding="utf-8"),
        description="Dataset card: counts, sources and rows set aside",
    )
    quarantined = load_jsonl(Path(snapshot.quarantine_path))
    if quarantined:
        for q in quarantined:
            if not q["reason"].startswith("exact duplicate"):
                logger.warning("quarantined %s:%s [%s] %s", q["source"], q["line"], q["field"] or "row", q["reason"])
        create_table_artifact(
            key=artifact_key(f"quarantine-{data.name}"),
            table=[{k: q[k] for k in ("source", "line", "field", "reason")} for q in quarantined],
            description="Rows set aside by prep, with the reason",
        )
    return snapshot


@task(name="base-model", retries=2, retry_condition_fn=retry_transient)
def resolve_base_model(
    base_model: str, shape: BaseModelSettings, corpus_dir: str, train_path: str, artifacts_root: str
) -> BaseModelArtifact:
    """The base model to fine-tune: built locally for the demo, pinned to a revision otherwise."""
    # The demo tokenizer learns its vocabulary from the corpus and the prepared training split:
    # never from raw sources, whose quarantined rows and unredacted addresses must not leak in.
    text_files = [*sorted(Path(corpus_dir).glob("*.md")), Path(train_path)]
    base = ensure_base_model(base_model, shape, text_files, LocalArtifactStore(Path(artifacts_root)))
    get_run_logger().info("base model %s at %s (%s)", base.name, base.path, base.digest[:19])
    return base

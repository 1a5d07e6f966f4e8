"""Tasks of the data side: dataset prep and the base model."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lockgate.basemodel import ensure_base_model
from lockgate.digest import short
from lockgate.pii import REDACT_ALL, redacted_copies
from lockgate.prep import snapshot_dataset
from lockgate.records import BaseModelArtifact, DatasetSnapshot
from lockgate.settings import BaseModelSettings, DataSettings
from lockgate.workspace import Workspace
from tasks.common import DEFAULT_BUT_WORKSPACE, artifact_key, dataset_card_key, retry_transient

QUARANTINE_TABLE_ROWS = 500


@task(name="prep-dataset", cache_policy=DEFAULT_BUT_WORKSPACE, retries=1, retry_condition_fn=retry_transient)
def prepare_dataset(*, sources: list[str], data: DataSettings, workspace: Workspace) -> DatasetSnapshot:
    """Read, validate, clean, redact, dedupe and split the sources into a versioned snapshot."""
    logger = get_run_logger()
    snapshot = snapshot_dataset(sources, data, workspace.artifacts)
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in snapshot.counts.items() if n)
    pii = ", ".join(f"{n} {kind}" for kind, n in snapshot.pii_found.items() if n) or "none"
    logger.info(
        "dataset %s (%s): %d input = %s; PII and secrets: %s",
        short(snapshot.digest, 16),
        snapshot.shape,
        snapshot.n_input,
        outcomes,
        pii,
    )
    create_markdown_artifact(
        key=dataset_card_key(data.name),
        markdown=Path(snapshot.card_path).read_text(encoding="utf-8"),
        description="Dataset card: every input record's outcome, PII found, sources, rows set aside",
    )
    # Rows are listed without their text: the quarantine file keeps a redacted copy, and an
    # artifact is no place for row contents.
    table: list[dict[str, object]] = []
    with Path(snapshot.quarantine_path).open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["outcome"] == "quarantined" and len(table) < 20:
                logger.warning("quarantined %s:%s [%s] %s", q["source"], q["line"], q["field"] or "row", q["reason"])
            if len(table) < QUARANTINE_TABLE_ROWS:
                table.append({k: q[k] for k in ("source", "line", "outcome", "field", "reason")})
    if table:
        create_table_artifact(
            key=artifact_key(f"quarantine-{data.name}"),
            table=table,
            description=f"Rows set aside by prep, with the reason (first {QUARANTINE_TABLE_ROWS})",
        )
    return snapshot


@task(name="base-model", cache_policy=DEFAULT_BUT_WORKSPACE, retries=2, retry_condition_fn=retry_transient)
def resolve_base_model(
    *,
    base_model: str,
    shape: BaseModelSettings,
    corpus_dir: str,
    train_path: str,
    workspace: Workspace,
    license_: str | None = None,
) -> BaseModelArtifact:
    """The base model to fine-tune: built locally for the demo, pinned to a revision otherwise."""
    # The demo tokenizer learns its vocabulary from the corpus and the prepared training split:
    # never from raw sources, whose quarantined rows and unredacted addresses must not leak in.
    # The corpus is redacted on the way, as it is for the index.
    store = workspace.artifacts
    docs = redacted_copies(sorted(Path(corpus_dir).glob("*.md")), store.scratch("tokenizer-text"), REDACT_ALL)
    base = ensure_base_model(base_model, shape, [*docs, Path(train_path)], store, license_=license_)
    get_run_logger().info("base model %s at %s (%s)", base.name, base.path, short(base.digest))
    return base

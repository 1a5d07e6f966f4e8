"""Scale-out: a large refresh plan embeds on a local 2-worker Dask cluster through prefect-dask, and the
index it builds is the one the single-process refresh builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lockgate.settings import DataSettings, EmbeddingSettings, VectorStoreSettings, load_settings
from lockgate.stores.milvus import MilvusStore
from lockgate.workspace import Workspace
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow


def big_corpus(tmp_path: Path, copies: int = 3) -> Path:
    """The sample corpus three times over (about 370 chunks: two refresh batches of 256)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(copies):
        for doc in sorted((EXAMPLES / "corpus").glob("*.md")):
            shutil.copy(doc, corpus / f"{doc.stem}-{n}.md")
    return corpus


def stored_vectors(uri: str, collection: str) -> dict[str, tuple[str, np.ndarray]]:
    with MilvusStore(uri, collection) as store:
        assert store.count() > 0  # loads the collection
        rows = store._iter_rows(["id", "content_digest", "vector"])
    return {r["id"]: (r["content_digest"], np.asarray(r["vector"], dtype=np.float32)) for r in rows}


def test_a_large_plan_embeds_on_a_two_worker_dask_cluster_with_the_same_result(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from tasks.index import refresh_index

    corpus = str(big_corpus(tmp_path))
    builds = {}
    workspaces = {
        mode: Workspace.open(load_settings(overrides={"home": str(tmp_path / mode)})) for mode in ("none", "dask")
    }
    for mode, workspace in workspaces.items():
        embeddings = EmbeddingSettings(scale_out=mode, dask_workers=2, dask_min_chunks=300)
        build = refresh_index(
            corpus_dir=corpus,
            data=DataSettings(),
            embeddings=embeddings,
            vector_store=VectorStoreSettings(),
            workspace=workspace,
        )
        builds[mode] = (workspace.index_uri, build)

    (uri_here, here), (uri_dask, on_dask) = builds["none"], builds["dask"]
    assert here.total == on_dask.total == here.added > 256, "a plan of two batches or more"
    with get_client(sync_client=True) as client:
        batches = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="embed-batch")))
    assert len(batches) == -(-here.added // 256), "one embed-batch task run per batch, run on the cluster"
    assert all(run.state is not None and run.state.is_completed() for run in batches)
    assert Path(here.manifest_path).read_text() == Path(on_dask.manifest_path).read_text(), "same manifest"
    assert here.digest == on_dask.digest
    a, b = stored_vectors(uri_here, here.collection), stored_vectors(uri_dask, on_dask.collection)
    assert a.keys() == b.keys() and all(a[k][0] == b[k][0] for k in a)
    # Identical up to float rounding: a worker runs torch on one thread, the flow's process on two.
    worst = max(float(np.abs(a[k][1] - b[k][1]).max()) for k in a)
    assert worst < 1e-5, worst

    # A small plan (here: one changed document) stays in the flow's process: no cluster start-up.
    doc = Path(corpus) / "relay-0.md"
    doc.write_text(doc.read_text() + "\nThe Relay also logs every order it forwards.\n")
    embeddings = EmbeddingSettings(scale_out="dask", dask_workers=2, dask_min_chunks=300)
    again = refresh_index(
        corpus_dir=corpus,
        data=DataSettings(),
        embeddings=embeddings,
        vector_store=VectorStoreSettings(),
        workspace=workspaces["dask"],
    )
    assert again.added + again.updated <= 3 and again.total >= on_dask.total
    with get_client(sync_client=True) as client:
        after = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="embed-batch")))
    assert len(after) == len(batches), "the small plan ran no task on the cluster"

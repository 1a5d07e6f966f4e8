"""Embedding on a Dask cluster through prefect-dask, for refresh plans too large for one process.

Each batch is a Prefect task run on a Dask worker (visible in the UI like any other task); every
worker loads the embedder once (``embedder_of`` is cached per process) and returns the batch's
vectors. The refresh writes each batch as soon as its vectors arrive, in order, so a lost worker
costs at most the batches in flight: the next refresh goes on from what the store acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from lockgate.refresh import ScaleOut
from lockgate.settings import EmbeddingSettings
from tasks.common import embedder_of


@task(name="embed-batch", retries=1, retry_delay_seconds=2, persist_result=False)
def embed_batch(*, embeddings: EmbeddingSettings, exported_models: str, texts: list[str]) -> np.ndarray:
    """The vectors of one batch, computed on whichever worker runs this."""
    return embedder_of(embeddings, Path(exported_models)).encode(texts)


def dask_scale_out(embeddings: EmbeddingSettings, exported_models: Path) -> ScaleOut | None:
    """What ``embeddings.scale_out`` asks for: ``None`` (embed in this process) or a Dask encoder.

    The workers of a cluster at ``dask_address`` need the app environment and ``PREFECT_API_URL``
    set to the server the flow runs against (the app image and a Prefect server do that). Workers
    get the folder of exported embedders (``Workspace.exported_models``), not the workspace: a
    batch needs no store, and what crosses to a worker is pickled.
    """
    if embeddings.scale_out != "dask":
        return None
    where = embeddings.dask_address or f"a local Dask cluster of {embeddings.dask_workers} workers"

    def encode(batches: list[list[str]]) -> Iterator[np.ndarray]:
        from prefect_dask import DaskTaskRunner

        # The cluster's own chatter (scheduler, nannies, connections) is not the user's business.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        runner = (
            DaskTaskRunner(address=embeddings.dask_address)
            if embeddings.dask_address
            else DaskTaskRunner(
                cluster_kwargs={
                    "n_workers": embeddings.dask_workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    "dashboard_address": ":0",
                    # Workers report their task runs to this run's API (in the default ephemeral
                    # mode, the server this process started), not to one of their own.
                    "env": {
                        "PREFECT_API_URL": _api_url(),
                        # The flow's terminal shows stages, not each worker's task runs and bars.
                        "PREFECT_LOGGING_LEVEL": "WARNING",
                        "TQDM_DISABLE": "1",
                        "TRANSFORMERS_VERBOSITY": "error",
                    },
                }
            )
        )
        with runner:
            parameters = {"embeddings": embeddings, "exported_models": str(exported_models)}
            futures: list[Any] = [runner.submit(embed_batch, {**parameters, "texts": texts}) for texts in batches]
            for future in futures:
                yield future.result()

    return ScaleOut(encode=encode, min_chunks=embeddings.dask_min_chunks, name=where)


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")

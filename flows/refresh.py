"""The embedding refresh, on its own schedule: the index follows the corpus without a retrain."""

from __future__ import annotations

from prefect import flow

from flows.params import StageParams
from lockgate.records import IndexBuild
from tasks.index import refresh_index


@flow(name="refresh")
def refresh(params: StageParams = StageParams()) -> IndexBuild:  # noqa: B008 (the UI form's default)
    """Re-embed only the chunks that changed, delete those that disappeared, and record the build.

    Safe to run any time: with an unchanged corpus it embeds nothing and changes nothing.
    """
    settings = params.settings()
    return refresh_index(
        str(settings.resolve(settings.data.corpus_dir)),
        settings.data,
        settings.embeddings,
        settings.vector_store,
        settings.vector_uri,
        settings.artifacts_dir,
    )

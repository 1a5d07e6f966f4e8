"""The embedding refresh, on its own schedule: the index follows the corpus without a retrain."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from flows.params import StageParams
from lockgate.records import IndexBuild
from lockgate.workspace import Workspace
from tasks.index import refresh_index


class RefreshParams(StageParams):
    """What to refresh: the profile's corpus, or another folder; ``force`` allows a mass delete."""

    corpus_dir: str | None = Field(
        default=None,
        description="Corpus folder instead of the profile's data.corpus_dir (absolute, or relative to the project).",
    )
    force: bool = Field(
        default=False,
        description="Allow deleting more than vector_store.max_delete_share of the index "
        "(the documents really are gone).",
    )

    def overrides(self) -> dict[str, Any]:
        out = super().overrides()
        if self.corpus_dir:
            out["data"] = {"corpus_dir": self.corpus_dir}
        return out


@flow(name="refresh")
def refresh(params: RefreshParams = RefreshParams()) -> IndexBuild:  # noqa: B008 (the UI form's default)
    """Re-embed only the chunks that changed, delete those that disappeared, and record the build.

    Safe to run any time: with an unchanged corpus it embeds nothing and changes nothing. A run
    that would delete more than vector_store.max_delete_share of the index (a wrong corpus folder)
    is refused unless ``force`` is set.
    """
    settings = params.settings()
    workspace = Workspace.open(settings)
    return refresh_index(
        corpus_dir=str(settings.resolve(settings.data.corpus_dir)),
        data=settings.data,
        embeddings=settings.embeddings,
        vector_store=settings.vector_store,
        workspace=workspace,
        force=params.force,
    )

"""The ``artifacts`` and ``registry`` areas: where stage outputs are kept, and where model versions
and aliases live."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockgate.settings.base import Area


class ArtifactSettings(Area):
    """Where stage outputs (datasets, adapters, models, reports) are kept, content-addressed."""

    url: str = Field(
        default="",
        description="Empty: <home>/artifacts. A folder, or an fsspec URL (s3://bucket/prefix, gs://..., "
        "memory://...): a remote store is read through a local cache under <home>/artifacts-cache.",
    )


class RegistrySettings(Area):
    """Where model versions and aliases live."""

    backend: Literal["local", "wandb"] = Field(
        default="local",
        description="'local': one JSON state file under a lock. 'wandb': the same, mirrored to W&B Artifacts "
        "(each promoted model an artifact version, registry aliases as W&B aliases).",
    )
    wandb_project: str = Field(default="lockgate", description="W&B project of the mirror.", min_length=1)
    wandb_entity: str | None = Field(default=None, description="W&B entity (team); default: the key's own.")
    wandb_mode: Literal["offline", "online"] = Field(
        default="offline", description="'offline' stages runs under <home>/wandb for `wandb sync` later."
    )

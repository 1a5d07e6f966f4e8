"""Weights & Biases as the tracker, and the run setup the registry's W&B mirror shares.

Offline (the default) runs are staged under ``directory`` for ``wandb sync`` later; online
runs need ``WANDB_API_KEY`` in the environment, never a setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

# Absolute import (this module's own name does not shadow it): the wandb package itself.
import wandb

WandbMode = Literal["offline", "online"]


def start_run(
    *,
    project: str,
    mode: WandbMode,
    directory: Path,
    job_type: str,
    config: dict[str, Any],
    entity: str | None = None,
) -> wandb.Run:
    """A new W&B run that stays quiet: no console capture, no system metrics."""
    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        entity=entity,
        mode=mode,
        dir=str(directory),
        job_type=job_type,
        config=config,
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True),
    )


class WandbTracker:
    """Tables logged as W&B runs (offline unless ``mode`` is ``online``)."""

    def __init__(self, *, project: str, mode: WandbMode, directory: Path, entity: str | None = None) -> None:
        self.project = project
        self.mode = mode
        self.directory = directory
        self.entity = entity

    def log_table(
        self, key: str, columns: list[str], rows: list[list[Any]], *, job_type: str, config: dict[str, Any]
    ) -> str | None:
        """Log ``rows`` as the W&B table ``key`` of a new run of ``job_type``; returns the run id."""
        run = start_run(
            project=self.project,
            mode=self.mode,
            directory=self.directory,
            job_type=job_type,
            config=config,
            entity=self.entity,
        )
        try:
            table_columns: list[str | int] = list(columns)
            run.log({key: wandb.Table(columns=table_columns, data=rows)})
            return str(run.id)
        finally:
            run.finish()

"""Trainer launchers: how an Axolotl training job is started, behind one Protocol.

``local`` runs the trainer environment's ``axolotl`` CLI as a subprocess of this process.
The other launcher, ``deployment``, is Prefect itself (the fine-tune flow started on a GPU
work pool with ``run_deployment``), so it lives in ``flows/``; inside that worker the same
local launcher trains.

May import ``lockgate`` below the stages (errors, digest, settings, checkpoints); no stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lockgate.checkpoints import CheckpointStore


@dataclass(frozen=True)
class TrainingRun:
    """What a launcher hands back: where the adapter is and what the trainer reported."""

    adapter_dir: Path
    steps: int
    train_loss: float | None
    resumed_from: str | None
    log_path: Path
    preemptions: int = 0
    steps_redone: int = 0


class TrainerLauncher(Protocol):
    """Runs one Axolotl training job to completion."""

    def train(
        self, config_path: Path, output_dir: Path, timeout_s: int, checkpoints: CheckpointStore | None = None
    ) -> TrainingRun:
        """Train with the YAML at ``config_path``; the adapter ends up in ``output_dir``.

        Args:
            checkpoints: where complete checkpoints are copied as they appear, and restored from.
        """
        ...


def open_launcher(kind: str, axolotl_bin: Path) -> TrainerLauncher:
    """The launcher that trains in this process's environment (``local``).

    Raises:
        ConfigError: for ``deployment``, which the flow layer handles before the task runs.
    """
    from lockgate.errors import ConfigError
    from lockgate.launchers.local import LocalAxolotlLauncher

    if kind != "local":
        raise ConfigError(f"training.launcher: {kind!r} is started by the flow (run_deployment), not in-process")
    return LocalAxolotlLauncher(axolotl_bin)

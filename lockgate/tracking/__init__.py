"""Tracking: results logged where people compare runs (W&B), never a source of truth.

``Tracker`` is the port; ``open_tracker`` picks the adapter from a setting at the edge (a
task or flow, never at import time). ``wandb.py`` is Weights & Biases, offline by default
(runs staged in a folder for ``wandb sync``), online with ``WANDB_API_KEY``. May import
``lockgate.errors``; no stage and no Prefect. Importing this package does not import wandb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["TRACKERS", "Tracker", "TrackerBackend", "open_tracker"]

TrackerBackend = Literal["wandb", "off"]
TRACKERS: tuple[TrackerBackend, ...] = ("wandb", "off")


class Tracker(Protocol):
    """Where a stage's tables go, one run per logged table."""

    def log_table(
        self, key: str, columns: list[str], rows: list[list[Any]], *, job_type: str, config: dict[str, Any]
    ) -> str | None:
        """Log ``rows`` as the table ``key`` of a new run; returns the run's id (``None``: nothing was logged)."""
        ...


class NoTracker:
    """Tracking switched off: nothing is logged anywhere."""

    def log_table(
        self, key: str, columns: list[str], rows: list[list[Any]], *, job_type: str, config: dict[str, Any]
    ) -> str | None:
        """Log nothing; returns ``None``."""
        return None


def open_tracker(
    backend: TrackerBackend = "wandb",
    *,
    project: str,
    mode: Literal["offline", "online"] = "offline",
    directory: Path,
    entity: str | None = None,
) -> Tracker:
    """The tracker ``backend`` names.

    Args:
        backend: ``wandb``, or ``off`` to log nothing.
        project: the W&B project.
        mode: ``offline`` stages runs under ``directory`` for ``wandb sync``; ``online`` needs WANDB_API_KEY.
        directory: where W&B keeps its run files.
        entity: the W&B entity (team); default: the key's own.

    Raises:
        ImportError: ``wandb`` is asked for but not installed.
    """
    if backend == "off":
        return NoTracker()
    from lockgate.tracking.wandb import WandbTracker

    return WandbTracker(project=project, mode=mode, directory=directory, entity=entity)

"""What every task module shares: the run context built once per flow run, and helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lockgate.embeddings import Embedder, SentenceTransformerEmbedder
from lockgate.errors import TransientError


# Retry only what may pass on retry; a DataError retried is the same DataError.
def retry_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Prefect ``retry_condition_fn``: retry on ``TransientError`` only."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


@lru_cache(maxsize=2)
def embedder_for(model: str, batch_size: int) -> Embedder:
    """One loaded embedder per process and model: loading costs seconds, encoding milliseconds."""
    return SentenceTransformerEmbedder(model, batch_size=batch_size)


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:100]


def outputs_exist(result: Any) -> bool:
    """Whether every local file or folder a stage result (or tuple of results) points at still exists."""
    for record in result if isinstance(result, tuple) else (result,):
        for name in ("path", "merged_path", "rows_path", "html_path"):
            location = getattr(record, name, None)
            if isinstance(location, str) and location and not Path(location).exists():
                return False
    return True


@dataclass
class StageLog:
    """Wall time per stage, in the order they ran, and which stages came from cache."""

    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def run_cached(self, stage: str, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a cached task; a cache hit whose files are gone (deleted by hand) is rebuilt."""
        state = task(*args, return_state=True, **kwargs)
        result = state.result()
        if state.name != "Cached":
            return result
        if outputs_exist(result):
            self.cached.append(stage)
            return result
        return task.with_options(refresh_cache=True)(*args, **kwargs)

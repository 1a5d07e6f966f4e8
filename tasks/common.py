"""What every task module shares: the run context built once per flow run, and helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import DEFAULT, CachePolicy
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

from lockgate import events
from lockgate.artifacts import ArtifactStore
from lockgate.embeddings import Embedder, SentenceTransformerEmbedder, resolve_model_path
from lockgate.errors import LockgateError, TransientError
from lockgate.fingerprint import environment_digest, stage_cache_key, weights_digest
from lockgate.records import Record
from lockgate.settings import EmbeddingSettings, LockgateSettings
from lockgate.signing import TamperedError, verify_record


@dataclass(kw_only=True)  # CachePolicy's own fields come first: positional arguments would fill those
class StageCache(CachePolicy):
    """Cache key = the stage's semantic inputs + the library source it runs + its environment.

    See ``lockgate.fingerprint``: records enter by digest, no absolute path enters at all.
    """

    stage: str = ""
    modules: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    # A result this says no to is never served from cache (``StageLog.run_cached`` re-runs the stage):
    # one that holds a failure which may pass next time, e.g. an evaluation whose LLM judge failed.
    reusable: Callable[[Any], bool] | None = None

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        return stage_cache_key(self.stage, self.modules, inputs, self.ignore).split(":", 1)[-1]


# Prefect's default policy (inputs, task source, run id) without the workspace, for tasks that take
# one and cache nothing across runs: the workspace says where, not what, and its open stores have
# nothing worth hashing (Prefect would log that it cannot hash them).
DEFAULT_BUT_WORKSPACE = DEFAULT - "workspace"


@dataclass(frozen=True)
class Fingerprints:
    """What stages name by path but depend on by content."""

    trainer_env: str
    embedder_weights: str


@task(name="fingerprints")
def fingerprints(settings: LockgateSettings) -> Fingerprints:
    """Digest the trainer environment and the embedder's weights (for cache keys)."""
    return Fingerprints(
        trainer_env=environment_digest(settings.resolve(settings.training.axolotl_bin)),
        embedder_weights=weights_digest(resolve_model_path(settings.embeddings.model)),
    )


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


@lru_cache(maxsize=2)
def _exported_embedder(backend: str, model: str, batch_size: int, cache_dir: str) -> Embedder:
    from lockgate.embeddings import open_embedder

    return open_embedder(backend, model, batch_size, Path(cache_dir))


def embedder_of(embeddings: EmbeddingSettings, exported_models: Path) -> Embedder:
    """The embedder ``embeddings.backend`` names, for every stage alike: vectors built with one
    backend are searched and compared with the same one. An exported model (ONNX) is kept in
    ``exported_models`` (``Workspace.exported_models``) under its weights' digest."""
    if embeddings.backend == "torch":
        return embedder_for(embeddings.model, embeddings.batch_size)
    return _exported_embedder(embeddings.backend, embeddings.model, embeddings.batch_size, str(exported_models))


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:100]


def dataset_card_key(name: str) -> str:
    """The artifact key of a dataset's card (prep writes it; the finetune task adds the length filter)."""
    return artifact_key(f"dataset-{name}")


def outputs_exist(result: Any, root: Path | None = None) -> bool:
    """Whether every local file or folder a stage result (or tuple of results) points at still exists,
    and, given a store ``root``, lies inside it (a cache hit made for another state folder is not ours)."""
    for record in result if isinstance(result, tuple | list) else (result,):
        for name in ("path", "merged_path", "rows_path", "html_path"):
            location = getattr(record, name, None)
            if not isinstance(location, str) or not location:
                continue
            if not Path(location).exists():
                return False
            if root is not None and not Path(location).resolve().is_relative_to(root.resolve()):
                return False
    return True


@dataclass
class StageLog:
    """Wall time per stage, in the order they ran, and which stages came from cache.

    A cached result made in another folder (a moved checkout) is relocated into this run's
    artifact store before its files are checked.
    """

    artifacts: ArtifactStore | None = None
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
        """Run a cached task; a cache hit whose files are gone (deleted by hand), or that its cache policy
        says is not reusable, is rebuilt."""
        state = task(*args, return_state=True, **kwargs)
        result = state.result()
        if state.name != "Cached":
            return result
        if self.artifacts is not None:
            result = _relocate(result, self.artifacts)
        policy = getattr(task, "cache_policy", None)
        reusable = policy.reusable if isinstance(policy, StageCache) else None
        if reusable is not None and not reusable(result):
            return task.with_options(refresh_cache=True)(*args, **kwargs)
        if outputs_exist(result, self.artifacts.root if self.artifacts is not None else None):
            if self.artifacts is not None and self.artifacts.signing is not None:
                # what a cache hit hands the next stage must be what the stage committed and signed
                try:
                    verify_record(self.artifacts.signing, result)
                except TamperedError as refused:
                    report_tampered(refused, f"the cached {stage} result")
                    raise
            self.cached.append(stage)
            return result
        return task.with_options(refresh_cache=True)(*args, **kwargs)


def _relocate(result: Any, artifacts: ArtifactStore) -> Any:
    if isinstance(result, tuple | list):
        return tuple(_relocate(r, artifacts) for r in result)
    return artifacts.relocate(result) if isinstance(result, Record) else result


def report_tampered(refused: TamperedError, boundary: str) -> None:
    """Log a refused artifact in one line and emit ``lockgate.artifact.tampered`` (automations, alerts)."""
    get_run_logger().error("%s refused: %s", boundary, refused)
    emit_event(
        event=events.ARTIFACT_TAMPERED,
        resource=events.artifact_resource(refused.artifact),
        payload={
            "boundary": boundary,
            "artifact": refused.artifact,
            "file": refused.file,
            "changes": [{"file": c.file, "change": c.change} for c in refused.changes],
            "message": str(refused),
        },
    )


def announce(event: str, resource: dict[str, str], payload: dict[str, Any], *, wait_s: float = 60) -> bool:
    """Emit ``event`` and wait until the Prefect server has stored it; False if it has not within
    ``wait_s`` seconds (or could not be sent at all).

    ``emit_event`` only queues: a background thread sends the event, and a process stopped right
    after its run ends (a worker shut down, a pod evicted) takes the queue with it. A watch that
    records a change as announced must know the server has the event, or the change is never
    announced again. The server stores events in batches (every 5 s by default)."""
    sent = emit_event(event=event, resource=resource, payload=payload)
    if sent is None:
        return False
    # Found by its id; the window around its time only keeps the server's query to one stretch.
    window = EventOccurredFilter(since=sent.occurred - timedelta(hours=1), until=sent.occurred + timedelta(hours=1))
    wanted = EventFilter(id=EventIDFilter(id=[sent.id]), occurred=window)
    deadline = time.monotonic() + wait_s
    problem: httpx.HTTPError | None = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                if client.read_events(filter=wanted, limit=1).events:
                    return True
            except httpx.HTTPError as err:  # the server is down or refuses: not stored, as far as we know
                problem = err
            time.sleep(0.5)
    get_run_logger().warning(
        "%s not found on the Prefect server after %.0f s%s", event, wait_s, f": {problem}" if problem else ""
    )
    return False


def record_on_dashboard(workspace: Any, kind: str, values: Mapping[str, float]) -> None:
    """Keep what a check measured on the workspace's dashboard (``monitoring.dashboard``). A dashboard
    that cannot be written is a warning: the check's verdict stands either way."""
    try:
        workspace.dashboard.record(kind, values)
    except LockgateError as exc:
        get_run_logger().warning("%s not recorded on the dashboard: %s", kind, exc)

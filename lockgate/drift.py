"""Embedding drift with Evidently: is the current text still like the reference?"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lockgate._io import load_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_json
from lockgate.records import DriftReport
from lockgate.settings import DriftSettings

log = logging.getLogger(__name__)


def drift_method(settings: DriftSettings):  # type: ignore[no-untyped-def]
    """The Evidently drift method named in the settings, with the configured threshold."""
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    if settings.method == "distance":
        return DistanceDriftMethod(dist="euclidean", threshold=settings.threshold, bootstrap=False)
    if settings.method == "mmd":
        return MMDDriftMethod(threshold=settings.threshold, bootstrap=False)
    if settings.method == "ratio":
        return RatioDriftMethod(threshold=settings.threshold)
    return ModelDriftMethod(threshold=settings.threshold, bootstrap=False)


def _frame(vectors: np.ndarray):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])


def _sample(vectors: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    if len(vectors) <= cap:
        return vectors
    idx = np.random.default_rng(seed).choice(len(vectors), size=cap, replace=False)
    return vectors[np.sort(idx)]


def detect_drift(
    reference: np.ndarray,
    current: np.ndarray,
    settings: DriftSettings,
    store: ArtifactStore | None = None,
    dataset_digest: str | None = None,
    texts: tuple[list[str], list[str]] | None = None,
) -> DriftReport:
    """Score drift of ``current`` against ``reference`` embeddings.

    Args:
        store: where to write Evidently's HTML report (content-addressed); None skips it.
        dataset_digest: the snapshot the current side comes from, recorded for the gate.
        texts: the reference and current texts, whose digests become the report's parents.
    """
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"drift needs at least 2 rows per side, got reference={len(reference)} current={len(current)}")
    ref = _sample(reference, settings.max_rows)
    cur = _sample(current, settings.max_rows)
    method = drift_method(settings)
    # ModelDriftMethod adds a target column to the frames it gets: hand it copies.
    score, drifted, _ = method(_frame(cur), _frame(ref))
    score = float(score)
    digest = digest_json(
        {
            "ref": digest_json(ref.round(5).tolist()),
            "cur": digest_json(cur.round(5).tolist()),
            "settings": settings.model_dump(exclude={"html_report"}),
            "dataset": dataset_digest,
        }
    )
    written = None
    if store is not None:
        staged = store.staging("drift")
        write_html(ref, cur, settings, staged / "report.html")
        _, folder = store.commit("drift", staged, digest)
        written = str(folder / "report.html")
    parents = tuple(digest_json(side) for side in texts) if texts is not None else ()
    return DriftReport(
        digest=digest,
        parents=parents,
        dataset_digest=dataset_digest,
        method=settings.method,
        score=score,
        threshold=settings.threshold,
        drifted=bool(drifted) or not np.isfinite(score),
        n_reference=len(ref),
        n_current=len(cur),
        html_path=written,
    )


def write_html(reference: np.ndarray, current: np.ndarray, settings: DriftSettings, path: Path) -> Path:
    """Evidently's embedding drift report as a standalone HTML file."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics.embeddings import EmbeddingsDrift

    cols = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(embeddings={"questions": cols})
    report = Report([EmbeddingsDrift(embeddings_name="questions", drift_method=drift_method(settings))])
    snapshot = report.run(
        current_data=Dataset.from_pandas(_frame(current), data_definition=definition),
        reference_data=Dataset.from_pandas(_frame(reference), data_definition=definition),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path


def drift_questions(
    production_train: str | None, snapshot_train: str, snapshot_eval: str
) -> tuple[list[str], list[str]]:
    """Reference and current texts for a drift check.

    The reference is what the production model was trained on (or, before anything is in
    production, the current training split); the current side is the current eval questions.

    Raises:
        DataError: production names a training file that is gone; comparing against anything
            else would hide drift.
    """
    from lockgate.errors import DataError

    reference = Path(production_train) if production_train else Path(snapshot_train)
    if not reference.is_file():
        raise DataError(
            f"drift reference {reference} (production's training data) is missing; restore it or roll production back"
        )
    return (
        [r["instruction"] for r in load_jsonl(reference)],
        [r["instruction"] for r in load_jsonl(Path(snapshot_eval))],
    )

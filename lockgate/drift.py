"""Embedding drift with Evidently's methods: is the current text still like the reference?

A score alone says little: what MMD scores on two samples of one distribution depends on the
sample sizes, the embedder and the text. So the threshold is calibrated on the reference itself
(``calibrate``): permutations split it into a window of the current side's size and the rest, the
method scores each split, and the threshold is set where at most ``false_alarm_rate`` of those
same-distribution scores lie above it. Every verdict then carries a p-value: the share of those
scores at least as high as the one observed.

MMD (Evidently's unbiased MMD^2 with an RBF kernel whose width is set by the median rule) is
computed here in blocks, for two reasons: Evidently builds the whole (m+n)^2 kernel (3 GB for
10,000 rows a side), and a calibration needs hundreds of permutations of one kernel, which are
matrix products once the kernel is known. ``mmd2u`` is Evidently's number (tested against it);
the other methods are Evidently's own, called as they are.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from lockgate._io import atomic_write_text, exclusive_lock, load_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_json
from lockgate.errors import DataError
from lockgate.records import DriftCalibration, DriftReport
from lockgate.registry import ModelRegistry, drift_reference
from lockgate.settings import DriftSettings

log = logging.getLogger(__name__)

# Reference rows a calibration permutes and the HTML report draws (both grow with the square of it).
CALIBRATION_ROWS = 2000
REPORT_ROWS = 2000
# Rows of the median rule's sample per side, as Evidently's MMD draws them.
MEDIAN_ROWS = 1000


def drift_method(settings: DriftSettings, threshold: float | None = None):  # type: ignore[no-untyped-def]
    """The Evidently drift method named in the settings, deciding at ``threshold`` (default: the setting's)."""
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    cut = settings.threshold if threshold is None else threshold
    if settings.method == "distance":
        return DistanceDriftMethod(dist="euclidean", threshold=cut, bootstrap=False)
    if settings.method == "mmd":
        return MMDDriftMethod(threshold=cut, bootstrap=False)
    if settings.method == "ratio":
        return RatioDriftMethod(threshold=cut)
    return ModelDriftMethod(threshold=cut, bootstrap=False)


def _frame(vectors: np.ndarray):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])


def _sample(vectors: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    if len(vectors) <= cap:
        return vectors
    idx = np.random.default_rng(seed).choice(len(vectors), size=cap, replace=False)
    return vectors[np.sort(idx)]


def median_gamma(reference: np.ndarray, current: np.ndarray) -> float:
    """The RBF kernel's 1/sigma^2 by the median rule, drawn as Evidently's MMD draws it (up to 1,000
    rows a side, pandas' sample with seed 0): sigma is the median distance between the two sides."""
    from sklearn.metrics import pairwise_distances

    x = _frame(reference).sample(min(len(reference), MEDIAN_ROWS), random_state=0)
    y = _frame(current).sample(min(len(current), MEDIAN_ROWS), random_state=0)
    sigma2 = float(np.median(pairwise_distances(x, y, metric="euclidean"))) ** 2
    return 1.0 / sigma2 if sigma2 > 0 else 1.0


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float, same: bool, block: int = 2048) -> float:
    """Sum of exp(-gamma |a_i - b_j|^2) over all pairs (``same``: a is b, the diagonal left out),
    a block at a time in float32 (a symmetric sum computes each off-diagonal block once)."""
    a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    a2, b2 = np.einsum("ij,ij->i", a32, a32), np.einsum("ij,ij->i", b32, b32)
    total = 0.0
    for i in range(0, len(a32), block):
        for j in range(i if same else 0, len(b32), block):
            sq = a32[i : i + block] @ b32[j : j + block].T
            sq *= -2.0
            sq += a2[i : i + block, None]
            sq += b2[None, j : j + block]
            np.maximum(sq, 0.0, out=sq)
            sq *= -gamma
            np.exp(sq, out=sq)
            if same and i == j:
                np.fill_diagonal(sq, 0.0)
            part = float(sq.sum(dtype=np.float64))
            total += 2.0 * part if same and i != j else part
    return total


def mmd2u(reference: np.ndarray, current: np.ndarray, gamma: float) -> float:
    """The unbiased MMD^2 of Evidently's ``MMDDriftMethod`` (before it clips at 0), without its kernel in memory."""
    m, n = len(reference), len(current)
    return (
        _kernel_sum(reference, reference, gamma, same=True) / (m * (m - 1.0))
        + _kernel_sum(current, current, gamma, same=True) / (n * (n - 1.0))
        - 2.0 * _kernel_sum(reference, current, gamma, same=False) / (m * n)
    )


def drift_score(
    reference: np.ndarray, current: np.ndarray, settings: DriftSettings, gamma: float | None = None
) -> float:
    """The method's score of ``current`` against ``reference`` (higher: more drift).

    Args:
        gamma: mmd only: the kernel width a calibration fixed (default: the median rule on these rows).
    """
    if settings.method == "mmd":
        return mmd2u(reference, current, median_gamma(reference, current) if gamma is None else gamma)
    # ModelDriftMethod adds a target column to the frames it gets: they are built for each call.
    score, _, _ = drift_method(settings)(_frame(current), _frame(reference))
    return float(score)


def check_sizes(n_reference: int, n_current: int, settings: DriftSettings, what: str = "drift") -> None:
    """Refuse sides too small to judge, with the counts (a verdict on them would be noise, not drift).

    Raises:
        DataError: the current side has fewer than ``min_rows`` rows, or the reference fewer than the
            current side plus ``min_rows`` (calibration compares windows of the current side's size
            with the rest of the reference).
    """
    reason = too_few_rows(n_reference, n_current, settings)
    if reason is not None:
        raise DataError(f"{what}: {reason}")


def too_few_rows(n_reference: int, n_current: int, settings: DriftSettings) -> str | None:
    """Why these sides are too small to judge, or None (see ``check_sizes``); ``max_rows`` caps both first."""
    n_reference, n_current = min(n_reference, settings.max_rows), min(n_current, settings.max_rows)
    if n_current < settings.min_rows or n_reference < n_current + settings.min_rows:
        return (
            f"{n_current} current and {n_reference} reference rows are too few to judge: the current side "
            f"needs at least drift.min_rows={settings.min_rows} and the reference at least {settings.min_rows} more "
            f"rows than the current side"
        )
    return None


def corpus_window(n_reference: int) -> int:
    """How many chunks of the current corpus a corpus-drift check judges against a reference of
    ``n_reference``: half of it, so the calibration's same-distribution windows (drawn from the
    reference and judged against the rest) have as many rows as the other side."""
    return max(1, n_reference // 2)


def _null_scores(
    reference: np.ndarray, window: int, settings: DriftSettings, rng: np.random.Generator
) -> tuple[np.ndarray, float | None]:
    """Scores of ``settings.resamples`` permutations of the reference: a window against the rest."""
    n = len(reference)
    if settings.method != "mmd":
        scores = []
        for _ in range(settings.resamples):
            order = rng.permutation(n)
            scores.append(drift_score(reference[order[window:]], reference[order[:window]], settings))
        return np.asarray(scores), None
    # MMD from one kernel: for a window indicator u (n x resamples), each split's three kernel sums
    # are u'Ku, u'K(1-u) and (1-u)'K(1-u), all read from K @ u.
    gamma = median_gamma(reference, reference)
    kernel = np.exp(-gamma * np.maximum(_squared_distances(reference), 0.0))
    np.fill_diagonal(kernel, 0.0)
    windows = np.zeros((n, settings.resamples))
    for r in range(settings.resamples):
        windows[rng.permutation(n)[:window], r] = 1.0
    k_u = kernel @ windows
    row_sums = kernel.sum(axis=1)
    in_window = np.einsum("ir,ir->r", windows, k_u)
    across = row_sums @ windows - in_window
    rest = row_sums.sum() - 2.0 * across - in_window
    m = n - window
    scores = rest / (m * (m - 1.0)) + in_window / (window * (window - 1.0)) - 2.0 * across / (m * window)
    return scores, gamma


def _squared_distances(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64, copy=False)
    norms = np.einsum("ij,ij->i", x64, x64)
    distances: np.ndarray = norms[:, None] + norms[None, :] - 2.0 * (x64 @ x64.T)
    return distances


def calibrate(reference: np.ndarray, window: int, settings: DriftSettings, seed: int = 0) -> DriftCalibration:
    """Calibrate ``settings.method`` for windows of ``window`` rows against this reference.

    The threshold is the ``k+1``-th highest same-distribution score, ``k = floor(rate x (resamples+1)) - 1``:
    a window scoring above it has a p-value of at most ``false_alarm_rate``.

    Raises:
        DataError: the reference or the window is too small (``check_sizes``).
        ConfigError: too few resamples for the false-alarm rate.
    """
    from lockgate.errors import ConfigError

    reference = _sample(reference, CALIBRATION_ROWS, seed)
    check_sizes(len(reference), window, settings, "drift calibration")
    allowed = math.floor(settings.false_alarm_rate * (settings.resamples + 1)) - 1
    if allowed < 0:
        raise ConfigError(
            f"drift.false_alarm_rate={settings.false_alarm_rate} needs at least "
            f"{math.ceil(1 / settings.false_alarm_rate) - 1} drift.resamples, not {settings.resamples}"
        )
    scores, gamma = _null_scores(reference, window, settings, np.random.default_rng(seed))
    ordered = np.sort(scores)[::-1]
    reference_digest = digest_json(reference.round(5).tolist())
    recipe = {
        "reference": reference_digest,
        "window": window,
        "settings": settings.model_dump(include={"method", "false_alarm_rate", "resamples"}),
        "seed": seed,
    }
    return DriftCalibration(
        digest=digest_json(recipe),
        parents=(reference_digest,),
        method=settings.method,
        window=window,
        n_reference=len(reference),
        false_alarm_rate=settings.false_alarm_rate,
        threshold=float(ordered[allowed]),
        gamma=gamma,
        null_scores=tuple(float(s) for s in np.sort(scores)),
        seed=seed,
    )


def p_value(calibration: DriftCalibration, score: float) -> float:
    """Share of the calibration's same-distribution scores at least ``score`` (the observed one counted)."""
    at_least = int(np.sum(np.asarray(calibration.null_scores) >= score))
    return (1 + at_least) / (len(calibration.null_scores) + 1)


def detect_drift(
    reference: np.ndarray,
    current: np.ndarray,
    settings: DriftSettings,
    store: ArtifactStore | None = None,
    dataset_digest: str | None = None,
    texts: tuple[list[str], list[str]] | None = None,
    calibration: DriftCalibration | None = None,
) -> DriftReport:
    """Score drift of ``current`` against ``reference`` embeddings.

    With ``settings.calibrate`` the threshold comes from ``calibration`` (made here from the reference
    if not given; committed to ``store`` as ``drift-calibrations``) and the report carries a p-value;
    without, ``settings.threshold`` decides.

    Args:
        store: where to write Evidently's HTML report and the calibration (content-addressed); None skips both.
        dataset_digest: the snapshot the current side comes from, recorded for the gate.
        texts: the reference and current texts, whose digests become the report's parents.

    Raises:
        DataError: a side is too small to judge (``check_sizes``).
    """
    ref = _sample(reference, settings.max_rows)
    cur = _sample(current, settings.max_rows)
    check_sizes(len(ref), len(cur), settings)
    if settings.calibrate and calibration is None:
        calibration = calibrate(ref, len(cur), settings)
        if store is not None:
            commit_calibration(calibration, store)
    if calibration is not None and settings.calibrate:
        score = drift_score(ref, cur, settings, calibration.gamma)
        threshold, p = calibration.threshold, p_value(calibration, score)
    else:
        calibration = None
        score, threshold, p = drift_score(ref, cur, settings), settings.threshold, None
    drifted = not np.isfinite(score) or score > threshold
    digest = digest_json(
        {
            "ref": digest_json(ref.round(5).tolist()),
            "cur": digest_json(cur.round(5).tolist()),
            "settings": settings.recipe(),
            "dataset": dataset_digest,
            "calibration": calibration.digest if calibration else None,
        }
    )
    parents = tuple(digest_json(side) for side in texts) if texts is not None else ()
    report = DriftReport(
        digest=digest,
        parents=parents,
        dataset_digest=dataset_digest,
        method=settings.method,
        score=score,
        threshold=threshold,
        drifted=bool(drifted),
        n_reference=len(ref),
        n_current=len(cur),
        html_path=None,
        p_value=p,
        calibration=calibration.digest if calibration else None,
    )
    if store is not None and settings.html_report:
        report = commit_html_report(report, reference, current, settings, store)
    return report


def commit_html_report(
    report: DriftReport, reference: np.ndarray, current: np.ndarray, settings: DriftSettings, store: ArtifactStore
) -> DriftReport:
    """Evidently's HTML report of a verdict ``detect_drift`` made on these embeddings, committed under the
    verdict's digest (``drift/<address>/report.html``); the report, naming it.

    For a verdict taken on the fast path (``html_report`` off) and worth a look afterwards (an alarm):
    the score and calibration are not computed again.
    """
    ref, cur = _sample(reference, settings.max_rows), _sample(current, settings.max_rows)
    staged = store.staging("drift")
    write_html(_sample(ref, REPORT_ROWS), _sample(cur, REPORT_ROWS), settings, staged / "report.html", report.threshold)
    _, folder = store.commit("drift", staged, report.digest)
    return report.model_copy(update={"html_path": str(folder / "report.html")})


def describe_verdict(report: DriftReport) -> str:
    """One line: the method, its score against the threshold, and how that threshold was set."""
    if report.p_value is None:
        return f"{report.method} score {report.score:.4g} vs fixed threshold {report.threshold:.4g} (uncalibrated)"
    return (
        f"{report.method} score {report.score:.4g} vs calibrated threshold {report.threshold:.4g}, "
        f"p = {report.p_value:.3g} ({report.n_current} vs {report.n_reference} rows)"
    )


def commit_calibration(calibration: DriftCalibration, store: ArtifactStore) -> Path:
    """Keep a calibration with the reference it was made from (``drift-calibrations/<address>/calibration.json``)."""
    staged = store.staging("drift-calibrations")
    (staged / "calibration.json").write_text(calibration.model_dump_json(indent=1), encoding="utf-8")
    return store.commit("drift-calibrations", staged, calibration.digest)[1]


def write_html(
    reference: np.ndarray, current: np.ndarray, settings: DriftSettings, path: Path, threshold: float | None = None
) -> Path:
    """Evidently's embedding drift report as a standalone HTML file (deciding at ``threshold``)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics.embeddings import EmbeddingsDrift

    cols = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(embeddings={"questions": cols})
    method = drift_method(settings, threshold)
    report = Report([EmbeddingsDrift(embeddings_name="questions", drift_method=method)])
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
    reference = Path(production_train) if production_train else Path(snapshot_train)
    return training_questions(reference), [r["instruction"] for r in load_jsonl(Path(snapshot_eval))]


def production_questions(registry: ModelRegistry, artifacts: ArtifactStore) -> list[str]:
    """The training questions of the production model: what served questions are compared with.

    Raises:
        DataError: nothing is in production, or its training file is gone.
    """
    reference = drift_reference(registry)
    if reference is None:
        raise DataError(
            "query drift compares served questions with production's training questions, "
            "and nothing is in production yet; release a model first"
        )
    return training_questions(Path(artifacts.locate(reference)))


def training_questions(path: Path) -> list[str]:
    """The questions of a training split: the reference drift is measured against.

    Raises:
        DataError: the file is gone; comparing against anything else would hide drift.
    """
    if not path.is_file():
        raise DataError(
            f"drift reference {path} (production's training data) is missing; restore it or roll production back"
        )
    return [r["instruction"] for r in load_jsonl(path)]


class AlarmBook:
    """When each resource last raised a drift alarm (``<home>/state/drift-alarms.json``).

    A drift that persists is found by every check; it should start one run per cooldown, not one
    per check. The book is read and written under a lock, so two checks at once ring once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self, resource: str) -> float | None:
        """When ``resource`` last rang (Unix time), or None."""
        return self._read().get(resource)

    def ring(self, resource: str, now: float, cooldown_s: float) -> float | None:
        """Record an alarm for ``resource`` unless one rang less than ``cooldown_s`` ago.

        Returns:
            None if this alarm is to be sent (and it is recorded), else the time the last one rang.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path.with_name(self.path.name + ".lock"), None, lambda: None):
            rung = self._read()
            previous = rung.get(resource)
            if previous is not None and now - previous < cooldown_s:
                return previous
            rung[resource] = now
            atomic_write_text(self.path, json.dumps(rung, indent=1, sort_keys=True))
            return None

    def _read(self) -> dict[str, float]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}  # a book nobody can read rings again: one extra run, never a missed drift
        return (
            {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}
        )

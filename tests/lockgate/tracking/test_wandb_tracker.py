"""The W&B tracker, offline: what W&B would receive is read back from the offline run files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lockgate.evaluate import MatrixCell, MatrixReport, log_matrix
from lockgate.records import MetricSummary
from lockgate.stats import PairedDifference
from lockgate.tracking import open_tracker
from tests.lockgate.registry.test_wandb_mirror import wandb_records


def _report() -> MatrixReport:
    summary = MetricSummary(mean=0.5, ci_low=0.4, ci_high=0.6, n=3)
    paired = PairedDifference(mean=0.0, ci_low=0.0, ci_high=0.0, n=3, confidence=0.95)
    cells = tuple(
        MatrixCell(
            prompt=p, model="base", model_digest="sha256:m", metrics={"rouge_l": summary}, paired={"rouge_l": paired}
        )
        for p in ("v1", "v2")
    )
    return MatrixReport(digest="sha256:matrix", reference="v1 | base", cells=cells, n_questions=3, rows_path="/r")


def _logged(directory: Path, run_id: str) -> tuple[str, dict[str, Any]]:
    """The job type and the ``prompt_matrix`` table fields of an offline run (W&B may still be writing it)."""
    deadline = time.monotonic() + 60
    while True:
        job_type, table = "", {}
        for run in directory.glob(f"wandb/offline-run-*-{run_id}/run-*.wandb"):
            for record in wandb_records(run):
                kind = record.WhichOneof("record_type")
                if kind == "run":
                    job_type = record.run.job_type
                elif kind == "history":
                    table.update(
                        {
                            item.nested_key[1]: json.loads(item.value_json)
                            for item in record.history.item
                            if list(item.nested_key)[:1] == ["prompt_matrix"] and len(item.nested_key) == 2
                        }
                    )
        if table or time.monotonic() > deadline:
            return job_type, table
        time.sleep(0.5)


def test_the_matrix_is_logged_as_a_table_of_an_offline_run(tmp_path: Path) -> None:
    tracker = open_tracker("wandb", project="lockgate-tests", mode="offline", directory=tmp_path / "wandb")
    run_id = log_matrix(_report(), "rouge_l", tracker)
    job_type, table = _logged(tmp_path / "wandb", run_id)
    assert job_type == "prompt-matrix"
    assert table["_type"] == "table-file" and table["nrows"] == 2 and table["ncols"] == 5


class _Recording:
    """A tracker that keeps what it is given (what evaluation hands any tracker)."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, list[str], list[list[Any]], str, dict[str, Any]]] = []

    def log_table(
        self, key: str, columns: list[str], rows: list[list[Any]], *, job_type: str, config: dict[str, Any]
    ) -> str | None:
        self.logged.append((key, columns, rows, job_type, config))
        return "run-1"


def test_the_matrix_reaches_a_tracker_as_columns_and_rows() -> None:
    tracker = _Recording()
    assert log_matrix(_report(), "rouge_l", tracker) == "run-1"
    ((key, columns, rows, job_type, config),) = tracker.logged
    assert key == "prompt_matrix" and job_type == "prompt-matrix"
    assert columns == ["prompt", "model", "rouge_l", "95% CI", "paired gain vs v1 | base"]
    assert [r[:3] for r in rows] == [["v1", "base", 0.5], ["v2", "base", 0.5]]
    assert config == {"matrix": "sha256:matrix", "metric": "rouge_l"}


def test_tracking_off_logs_nothing(tmp_path: Path) -> None:
    tracker = open_tracker("off", project="lockgate-tests", directory=tmp_path / "wandb")
    assert log_matrix(_report(), "rouge_l", tracker) is None
    assert not (tmp_path / "wandb").exists()

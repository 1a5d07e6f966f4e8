"""The terminal's stage lines, record by record (the whole run's output: test_cli_output.py)."""

from __future__ import annotations

import logging

import pytest

from flows.cli import console
from flows.cli.console import StageLines
from flows.params import STAGE_DONE


def record(name: str, message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_a_stage_takes_its_time_from_the_flow_runs_start_not_from_starting_prefect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting Prefect's temporary server (seconds) before the run is no stage's time."""
    clock = iter([100.0, 130.0, 131.5, 134.0, 200.0])  # console made; run begins; three stages
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    lines = StageLines("normal")
    assert lines.filter(record("prefect.flow_runs", "Beginning flow run 'x' for flow 'release'"))
    first = record("prefect.task_runs", "Finished in state Completed()", task_run_name="fingerprints-0a1")
    second = record("prefect.task_runs", "Finished in state Cached(type=COMPLETED)", task_run_name="prep-dataset-b2c")
    assert lines.filter(first) and lines.filter(second)
    assert first.getMessage() == "fingerprints: completed (1.5 s)"
    assert second.getMessage() == "prep-dataset: cached (2.5 s)"
    # A stage no task of this process ran (a fine-tune on a work pool) has its line too.
    pool = record("prefect.flow_runs", "fine-tune on the pool done", **{STAGE_DONE: "finetune"})
    assert lines.filter(pool) and pool.getMessage() == "finetune: completed (66.0 s)"
    # A library's record, even an error, stays out of the terminal; the user's warnings reach it.
    assert not lines.filter(record("pymilvus", "no such alias", logging.ERROR))
    assert lines.filter(record("lockgate.data", "quarantined row 3", logging.WARNING))
    assert not lines.filter(record("prefect.flow_runs", "Created task run 'x'"))


def test_the_console_imports_no_prefect() -> None:
    """`lockgate release` imports the console before its flow preamble, which points Prefect at the
    state folder (PREFECT_HOME) and must run before Prefect is imported."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = "import sys, flows.cli.console; print(sorted(m for m in ('prefect', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout

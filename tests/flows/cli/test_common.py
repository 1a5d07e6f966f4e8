"""The shared pieces of the command line: a leaf module, and the flow preamble's verdict on a rejection."""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

import pytest

from flows.cli import _common
from flows.cli._common import EXIT_REJECTED, NoTracebackForVerdicts, run_flow
from lockgate.errors import GateRejected


def test_common_imports_no_command_module() -> None:
    tree = ast.parse(Path(_common.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("flows.cli")} <= {"flows.cli.console"}, imported


def test_a_rejection_becomes_exit_3_with_its_details_only_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    with run_flow(tmp_path, catch_rejected=True) as run:
        raise GateRejected("rejected", details={"passed": False})
    assert (run.exit_code, run.result, run.log_path) == (EXIT_REJECTED, {"passed": False}, None)

    with pytest.raises(GateRejected), run_flow(tmp_path):
        raise GateRejected("rejected")


def test_a_verdict_is_one_line_that_says_its_reason_once() -> None:
    """Prefect logs a flow's exception with its repr and traceback; a verdict keeps one line."""
    try:
        raise GateRejected("gate rejected the candidate: rouge_l 0.251 below floor 0.3")
    except GateRejected as exc:
        record = logging.LogRecord(
            "prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception during execution: %r", (exc,),
            sys.exc_info(),
        )  # fmt: skip
    assert NoTracebackForVerdicts().filter(record)
    assert record.getMessage() == (
        "Encountered exception during execution: gate rejected the candidate: rouge_l 0.251 below floor 0.3"
    )
    assert record.exc_info is None and logging.Formatter().format(record).count("\n") == 0

    try:
        raise RuntimeError("a real crash")
    except RuntimeError:
        crash = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    assert NoTracebackForVerdicts().filter(crash) and crash.exc_info is not None, "a crash keeps its traceback"

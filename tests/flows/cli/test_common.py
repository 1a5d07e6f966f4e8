"""The shared pieces of the command line: a leaf module, and the flow preamble's verdict on a rejection."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.cli import _common
from flows.cli._common import EXIT_REJECTED, run_flow
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

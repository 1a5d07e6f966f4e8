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


SIGTERMED = """
import os, signal, sys, time
from pathlib import Path
from flows.cli._common import Terminated, run_flow

before = signal.getsignal(signal.SIGTERM)
try:
    with run_flow(Path(sys.argv[1])):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # a job's timeout, `docker stop`, between two flows
            time.sleep(30)
        finally:
            Path(sys.argv[2]).write_text("unwound")  # what a command's clean-up does
except Terminated as exc:
    print(exc)
print("handler restored" if signal.getsignal(signal.SIGTERM) is before else "handler left behind")
"""


def test_sigterm_unwinds_a_command_so_what_it_started_is_stopped(tmp_path: Path) -> None:
    """`lockgate ask` stopped by SIGTERM between its flows died on the spot and left its vLLM engine
    running. Under run_flow SIGTERM unwinds the stack (finally blocks run) and ends in Terminated."""
    import os
    import subprocess

    from tests.conftest import ROOT

    marker = tmp_path / "cleaned-up"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SIGTERMED, str(tmp_path / "home"), str(marker)],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert marker.read_text() == "unwound", "the command's clean-up did not run"
    assert done.stdout.splitlines() == [
        "stopped by SIGTERM: what this command had started is stopped",
        "handler restored",
    ], done.stdout


def test_what_prefect_raises_after_its_own_sigterm_is_one_terminated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a flow Prefect turns SIGTERM into TerminationSignal and reports the crash; with its
    temporary server stopped by the same signal that report fails (httpx.ConnectError, after its
    retries). The command says it was stopped, not that the API is down; other errors pass."""
    import httpx
    from prefect.exceptions import TerminationSignal

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))

    def report_crash() -> None:
        raise httpx.ConnectError("All connection attempts failed")

    with pytest.raises(_common.Terminated) as stopped, run_flow(tmp_path):
        try:
            raise TerminationSignal(15)
        except TerminationSignal:
            report_crash()
    assert isinstance(stopped.value.__cause__, httpx.ConnectError)

    with pytest.raises(httpx.ConnectError), run_flow(tmp_path):
        raise httpx.ConnectError("All connection attempts failed")


def test_a_terminated_command_is_one_line_and_exit_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import EXIT_TERMINATED, main, registry

    def stopped(args: object) -> int:
        raise _common.Terminated("stopped by SIGTERM: what this command had started is stopped")

    monkeypatch.setattr(registry, "cmd_status", stopped)
    assert main(["status"]) == EXIT_TERMINATED == 143
    assert capsys.readouterr().err.strip() == "error: stopped by SIGTERM: what this command had started is stopped"

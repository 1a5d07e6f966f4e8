"""Operator mistakes end with one clear line and a documented exit code, never a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess

import pytest

from flows.cli import EXIT_BAD_INPUT, EXIT_FAILED, build_parser, main
from tests.conftest import ROOT
from tests.live import free_port


def minimal_argv(parser: argparse.ArgumentParser) -> list[list[str]]:
    """For every (sub)command, the shortest argument list that parses."""
    found: list[list[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [[name, *rest] for rest in minimal_argv(sub)]
            return found
    positionals = [a for a in parser._actions if not a.option_strings and a.nargs not in ("*", "?")]
    required = [str(next(iter(a.choices))) if a.choices else "x" for a in positionals]
    required += [o for a in parser._actions if a.required and a.option_strings for o in (a.option_strings[0], "x")]
    return [required]


COMMANDS = minimal_argv(build_parser())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_bad_profile_is_one_line_and_exit_2_on_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--profile", "../x", *command]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--profile '../x' is not a profile" in err, err


def test_every_command_is_checked() -> None:
    assert {c[0] for c in COMMANDS} >= {"release", "status", "rollback", "gate", "prep", "settings"}


def test_a_prefect_api_that_does_not_answer_is_one_line_and_exit_1(tmp_path: object) -> None:
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "lockgate"), "--home", str(tmp_path), "release"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == EXIT_FAILED, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Failed to reach API at") and "PREFECT_API_URL" in last, last


@pytest.mark.parametrize("action", ["queries", "calibrate"])
def test_drift_without_a_production_model_is_one_line_and_exit_2(
    action: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "drift", action]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "nothing is in production yet; release a model first" in err, err


def test_a_drift_window_out_of_bounds_is_named(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "drift", "queries", "--window", "1"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "window" in err, err

"""Every command keeps its help: a one-line summary in the list, and a description where it had one."""

from __future__ import annotations

import argparse
import subprocess
import sys

from flows.cli import build_parser
from tests.conftest import ROOT

# Each command (and sub-command) of the parser, and whether its --help has a description.
COMMANDS = {
    "release": True,
    "finetune": True,
    "status": False,
    "rollback": True,
    "gate": True,
    "prep": True,
    "settings": False,
    "refresh": True,
    "index": True,
    "prompts": True,
    "prompts list": False,
    "prompts show": False,
    "prompts diff": False,
    "prompts promote": False,
    "prompts release": True,
    "prompts rollback": True,
    "serve": True,
    "serve-key": True,
    "deploy": True,
    "ask": True,
    "drift": True,
    "monitor": True,
    "verify": True,
}


def commands(parser: argparse.ArgumentParser, path: str = "") -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Every sub-command below ``parser`` by its path ("prompts list"), with its one-line help and its parser."""
    found: dict[str, tuple[str, argparse.ArgumentParser]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found[f"{path}{name}"] = (helps.get(name, ""), sub)
                found.update(commands(sub, f"{path}{name} "))
    return found


def test_every_command_is_in_the_parser_in_the_same_order() -> None:
    assert list(commands(build_parser())) == list(COMMANDS)


def test_every_command_has_a_summary_and_its_description() -> None:
    for path, (summary, parser) in commands(build_parser()).items():
        assert summary.strip(), f"{path}: no help line in the command list"
        assert bool((parser.description or "").strip()) == COMMANDS[path], f"{path}: description"
        assert parser.prog == f"lockgate {path}", parser.prog


def test_the_top_help_lists_every_command_and_the_exit_codes() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "flows", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: lockgate")
    listed = {line.split()[0] for line in shown.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert {path for path in COMMANDS if " " not in path} <= listed, shown.stdout
    assert "Exit codes: 0 success, 1 a stage failed, 2 bad input" in " ".join(shown.stdout.split())

"""``lockgate status`` and ``lockgate rollback``: the model registry's aliases and history."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, prefect_defaults, settings_of


def cmd_status(args: argparse.Namespace) -> int:
    """show registry aliases and recent history"""
    from lockgate.digest import short
    from lockgate.registry import describe_state
    from lockgate.workspace import Workspace

    state = Workspace.open(settings_of(args)).registry.snapshot()
    if args.json:
        print(state.model_dump_json(indent=2))
        return 0
    print(describe_state(state))
    print("\nhistory (newest last):")
    for move in state.history[-10:]:
        print(f"  {move.at} {move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}  {move.reason}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """point an alias back where it was before its last move

    Step an alias back; rolling production back revokes the version it leaves (the gate will not
    promote it again). With PREFECT_API_URL set, emits lockgate.model.rolled_back to that server.
    """
    from lockgate.digest import short
    from lockgate.workspace import Workspace

    workspace = Workspace.open(settings_of(args))
    move = workspace.registry.rollback(args.alias, reason=args.reason)
    print(f"{move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}")
    _emit_rollback(workspace.home, move.alias, move.previous, move.current, move.reason)
    return 0


def _emit_rollback(home: Path, alias: str, previous: str | None, current: str | None, reason: str) -> None:
    """``lockgate.model.rolled_back``, so automations (and the serving layer) hear of it.

    Sent to the Prefect server ``PREFECT_API_URL`` names; without one there is nobody to hear
    it, and starting a temporary server for it would cost seconds, so it is not sent.
    """
    if not os.environ.get("PREFECT_API_URL"):
        return
    prefect_defaults(home)
    from prefect.events import emit_event

    from lockgate import events

    emit_event(
        event=events.MODEL_ROLLED_BACK,
        resource=events.model_resource(previous or "none"),
        payload={"alias": alias, "previous": previous, "current": current, "reason": reason},
    )


def register(subparsers: Any) -> None:
    """Add ``status`` and ``rollback`` to the ``lockgate`` command line."""
    status = add_command(subparsers, "status", cmd_status)
    status.add_argument("--json", action="store_true", help="print the whole registry state as JSON")

    rollback = add_command(subparsers, "rollback", cmd_rollback)
    rollback.add_argument("--alias", default="production", choices=["candidate", "canary", "production"])
    rollback.add_argument("--reason", default="manual rollback", help="recorded in the history")

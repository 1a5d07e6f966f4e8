"""``lockgate settings``: a profile's resolved settings, or the list of profiles."""

from __future__ import annotations

import argparse
import json
from typing import Any

from flows.cli._common import add_command, settings_of


def cmd_settings(args: argparse.Namespace) -> int:
    """print the resolved settings of a profile"""
    from lockgate.settings import list_profiles

    if args.list:
        print("\n".join(list_profiles()))
        return 0
    print(json.dumps(settings_of(args).model_dump(), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``settings`` to the ``lockgate`` command line."""
    settings = add_command(subparsers, "settings", cmd_settings)
    settings.add_argument("--list", action="store_true", help="list the profiles instead")

"""``lockgate gate explain``: the gate policy, validated and in words."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, settings_of


def cmd_gate(args: argparse.Namespace) -> int:
    """the gate policy: 'explain' prints it in words

    Print the gate policy (gates.policy of the profile, or --policy FILE) in words, after validating it.
    A bad policy is one line naming the file and every bad field, exit 2.
    """
    from lockgate.policy import explain, load_policy

    settings = settings_of(args)
    path = Path(args.policy) if args.policy else settings.policy_path
    policy = load_policy(path)
    if args.json:
        print(json.dumps({"path": str(path), "digest": policy.digest, "policy": policy.model_dump(mode="json")}))
    else:
        print(f"{path}\n")
        print(explain(policy))
    return 0


def register(subparsers: Any) -> None:
    """Add ``gate`` to the ``lockgate`` command line."""
    gate = add_command(subparsers, "gate", cmd_gate)
    gate.add_argument("action", choices=["explain"], help="what to do with the policy")
    gate.add_argument("--policy", default=None, help="a policy file instead of the profile's gates.policy")
    gate.add_argument("--json", action="store_true", help="print the validated policy and its digest as JSON")

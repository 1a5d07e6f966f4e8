"""``lockgate release``: run the whole release pipeline once and print what it decided."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli._common import add_command, run_flow


def cmd_release(args: argparse.Namespace) -> int:
    """run the whole release pipeline once

    Run the release flow end to end and print what it decided, with timings.
    """
    from flows.params import ReleaseParams
    from lockgate.policy import load_policy

    params = ReleaseParams(
        profile=args.profile,
        scenario=args.scenario,
        max_steps=args.max_steps,
        home=args.home,
        decision_mode=args.decision_mode,
    )
    settings = params.settings()  # fail fast on bad config
    load_policy(settings.policy_path)  # and on a bad gate policy
    from flows.cli.console import Mode, print_summary, save_summary

    mode: Mode = "json" if args.json else "quiet" if args.quiet else "normal"
    with run_flow(settings.home_path, mode, catch_rejected=True) as run:
        from flows.pipeline import release, summary_markdown

        run.result = release(params)
    # After the console: inside it, stdout goes to the log file.
    assert run.log_path is not None  # a console mode always has a log file
    save_summary(run.result, run.log_path)
    print_summary(run.result, run.log_path, mode, summary_markdown(run.result))
    return run.exit_code


def register(subparsers: Any) -> None:
    """Add ``release`` to the ``lockgate`` command line."""
    release = add_command(subparsers, "release", cmd_release)
    release.add_argument(
        "--scenario",
        default="normal",
        choices=["normal", "no-training", "shuffled-labels"],
        help="'normal' trains for real; the others sabotage the candidate so the gate rejects it",
    )
    release.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    release.add_argument(
        "--decision-mode",
        default=None,
        choices=["auto", "manual", "dry_run"],
        help="override gates.decision_mode: manual waits for approval in the Prefect UI; dry_run moves nothing",
    )
    shown = release.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print only errors and the closing summary")
    shown.add_argument("--json", action="store_true", help="print only the summary, as one JSON object on stdout")

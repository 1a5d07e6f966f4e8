"""``lockgate finetune``: prep and fine-tune alone, here or on the work pool, and where the adapter is."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli._common import add_command, run_flow


def cmd_finetune(args: argparse.Namespace) -> int:
    """fine-tune an adapter alone: no quantization, evaluation or gate

    Prepare the data and train a LoRA adapter with Axolotl, here or on the work pool that
    training.launcher=deployment names (re-submitted from its checkpoints when its worker
    vanishes), and print where the adapter and its data snapshot are. Nothing is promoted; a
    `lockgate release` of the same data and settings afterwards takes this adapter from cache.
    """
    from flows.params import TrainParams

    params = TrainParams(profile=args.profile, home=args.home, max_steps=args.max_steps)
    settings = params.settings()  # fail fast on bad config, before Prefect starts
    from flows.cli.console import Mode, save_summary, summary_json

    mode: Mode = "json" if args.json else "quiet" if args.quiet else "normal"
    with run_flow(settings.home_path, mode, command="finetune") as run:
        from flows.finetune import train, train_markdown

        run.result = train(params)
    assert run.log_path is not None  # a console mode always has a log file
    save_summary(run.result, run.log_path)
    if mode == "json":
        print(summary_json(run.result, run.log_path))
    else:
        print("\n" + train_markdown(run.result) + f"\nFull log: `{run.log_path}`")
    return 0


def register(subparsers: Any) -> None:
    """Add ``finetune`` to the ``lockgate`` command line."""
    finetune = add_command(subparsers, "finetune", cmd_finetune)
    finetune.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    shown = finetune.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print only errors and the closing summary")
    shown.add_argument("--json", action="store_true", help="print only the summary, as one JSON object on stdout")

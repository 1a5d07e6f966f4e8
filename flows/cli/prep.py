"""``lockgate prep``: the dataset prep stage alone, and its card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, settings_of


def cmd_prep(args: argparse.Namespace) -> int:
    """run the dataset prep stage alone and print its card

    Read, validate, redact, dedupe and split the given files (default: the profile's data.sources)
    into a dataset snapshot under the state folder, and print its card: every input record's
    outcome, and that they add up. Exit 0 when a snapshot was written, 2 when the input leaves
    nothing usable.
    """
    from lockgate.prep import snapshot_dataset
    from lockgate.readers import is_url
    from lockgate.workspace import Workspace

    settings = settings_of(args)
    sources = [f if is_url(f) else str(Path(f).resolve()) for f in args.files] if args.files else settings.sources
    snapshot = snapshot_dataset(sources, settings.data, Workspace.open(settings).artifacts)
    if args.json:
        fields = ("digest", "shape", "n_input", "counts", "pii_found", "train_path", "eval_path", "quarantine_path")
        out = {k: getattr(snapshot, k) for k in fields}
        out.update(snapshot_path=snapshot.path, card_path=snapshot.card_path, sources=sources)
        print(json.dumps(out, indent=2))
        return 0
    print(Path(snapshot.card_path).read_text(encoding="utf-8"))
    print(f"snapshot: {snapshot.path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``prep`` to the ``lockgate`` command line."""
    prep = add_command(subparsers, "prep", cmd_prep)
    prep.add_argument("files", nargs="*", help="JSONL, CSV or Parquet files, local or fsspec URLs (s3://, gs://...)")
    prep.add_argument("--json", action="store_true", help="print one JSON object: paths, digest and counts per outcome")

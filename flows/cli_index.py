"""``refresh``: run the embedding refresh flow alone and print what it changed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def cmd_refresh(args: argparse.Namespace) -> int:
    from flows.cli import _prefect_defaults, _quiet_verdict_tracebacks
    from flows.refresh import RefreshParams

    corpus = str(Path(args.corpus).resolve()) if args.corpus else None
    params = RefreshParams(profile=args.profile, home=args.home, corpus_dir=corpus, force=args.force)
    settings = params.settings()  # fail fast on bad config, before Prefect starts
    from lockgate.corpus import check_corpus_dir

    check_corpus_dir(settings.resolve(settings.data.corpus_dir))
    _prefect_defaults(settings.home_path)
    from flows.refresh import refresh

    _quiet_verdict_tracebacks()
    started = time.perf_counter()
    build = refresh(params)
    seconds = time.perf_counter() - started
    print(
        f"\nindex {build.collection} at {build.uri}\n"
        f"added {build.added}, updated {build.updated}, deleted {build.deleted}, unchanged {build.unchanged} "
        f"(total {build.total}) in {seconds:.1f} s (the whole run, Prefect's start included)\n"
        f"manifest {build.manifest_path}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``refresh`` command to the ``python -m flows`` parser."""
    rf = subparsers.add_parser(
        "refresh",
        help="run the embedding refresh alone and print what it changed",
        description="Chunk the corpus (default: the profile's data.corpus_dir), embed only what changed, "
        "upsert it into the vector store (vector_store.backend) and delete what disappeared; print the "
        "build: added, updated, deleted, unchanged, seconds. A run that would delete more than "
        "vector_store.max_delete_share of the index is refused (exit 2) unless --force.",
    )
    rf.add_argument("--corpus", default=None, help="corpus folder instead of the profile's data.corpus_dir")
    rf.add_argument("--force", action="store_true", help="allow a refresh that deletes most of the index")
    rf.set_defaults(func=cmd_refresh)

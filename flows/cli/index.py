"""``refresh`` runs the embedding refresh flow alone; ``index status|switch|rollback`` moves the serving alias."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from flows.cli._common import add_command, run_flow, settings_of


def cmd_refresh(args: argparse.Namespace) -> int:
    """run the embedding refresh alone and print what it changed

    Chunk the corpus (default: the profile's data.corpus_dir), embed only what changed, upsert it
    into the vector store (vector_store.backend) and delete what disappeared; print the build:
    added, updated, deleted, unchanged, seconds. A run that would delete more than
    vector_store.max_delete_share of the index is refused (exit 2) unless --force.
    """
    from flows.refresh import RefreshParams
    from lockgate.corpus import check_corpus_dir

    corpus = str(Path(args.corpus).resolve()) if args.corpus else None
    params = RefreshParams(profile=args.profile, home=args.home, corpus_dir=corpus, force=args.force)
    settings = params.settings()  # fail fast on bad config, before Prefect starts
    check_corpus_dir(settings.resolve(settings.data.corpus_dir))
    started = time.perf_counter()
    with run_flow(settings.home_path, "normal", command="refresh") as run:
        from flows.refresh import refresh

        build = refresh(params)
    seconds = time.perf_counter() - started
    print(
        f"\nindex {build.collection} at {build.uri}\n"
        f"added {build.added}, updated {build.updated}, deleted {build.deleted}, unchanged {build.unchanged} "
        f"(total {build.total}) in {seconds:.1f} s (the whole run, Prefect's start included)\n"
        f"manifest {build.manifest_path}\nfull log {run.log_path}"
    )
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """blue/green index collections: status, switch, rollback

    Each embedder builds its own collection beside the serving one. 'status' lists them and which
    serves; 'switch' serves the newest complete one (or --to NAME); 'rollback' serves the previous
    one again. Nothing is deleted.
    """
    from lockgate.digest import short
    from lockgate.stores.aliases import home_aliases

    settings = settings_of(args)
    aliases = home_aliases(settings.home_path)
    logical = settings.vector_store.collection
    if args.action == "switch":
        move = aliases.switch(logical, to=args.to, reason=args.reason or "manual switch")
    elif args.action == "rollback":
        move = aliases.rollback(logical, reason=args.reason or "manual rollback")
    else:
        state = aliases.state(logical)
        print(f"index {logical} ({settings.vector_store.backend} at {settings.vector_uri})")
        print(f"  serving:  {state.serving or '-'}")
        print(f"  previous: {state.previous or '-'}")
        for gen in sorted(state.generations.values(), key=lambda g: g.built_at):
            mark = "*" if gen.collection == state.serving else " "
            print(
                f"  {mark} {gen.collection}  embedder {gen.embedder_name} ({short(gen.embedder)})  "
                f"{gen.vectors} vectors  built {gen.built_at}  build {short(gen.build_digest)}"
            )
        if not state.generations:
            print("  no complete build yet: run `python -m flows refresh`")
        return 0
    from lockgate.refresh import point_store_alias
    from lockgate.stores import open_store

    vs = settings.vector_store
    point_store_alias(lambda physical: open_store(vs.backend, settings.vector_uri, physical, vs), logical, move.current)
    print(f"index {logical}: {move.previous or '-'} -> {move.current} ({move.reason})")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``refresh`` and ``index`` commands to the ``lockgate`` command line."""
    refresh = add_command(subparsers, "refresh", cmd_refresh)
    refresh.add_argument("--corpus", default=None, help="corpus folder instead of the profile's data.corpus_dir")
    refresh.add_argument("--force", action="store_true", help="allow a refresh that deletes most of the index")

    index = add_command(subparsers, "index", cmd_index)
    index.add_argument("action", choices=["status", "switch", "rollback"], help="what to do")
    index.add_argument("--to", default=None, help="switch: the collection to serve (default: the newest complete one)")
    index.add_argument("--reason", default=None, help="recorded in the alias history")

"""``lockgate drift queries|corpus|calibrate``: served questions against production's, the corpus against the
serving index's, and the threshold judging them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from flows.cli._common import add_command, run_flow


def cmd_drift(args: argparse.Namespace) -> int:
    """drift of production's inputs: 'queries' (what users asked), 'corpus' (what is about to be indexed), 'calibrate'

    'queries' runs the query-drift flow: the last drift.query_window questions of each variant in
    the gateway's query log (of the last drift.query_hours, if set) against production's training
    questions, judged by a p-value at drift.false_alarm_rate; a drift emits lockgate.drift.detected
    (at most once per drift.cooldown_s) and writes Evidently's HTML report. 'calibrate' draws
    drift.resamples same-distribution windows of --window questions from production's training
    questions, prints the threshold they set and records the calibration. 'corpus' runs the
    corpus-drift flow: a sample of data.corpus_dir's chunks (--corpus to check another folder)
    against the sample kept when the serving index was built; a drift emits lockgate.drift.detected
    for lockgate.corpus.<collection>, which starts the refresh deployment. Exit 0 either way (a
    drift is a finding); 2 when there is no production model, no query log or no index yet.
    """
    from flows.params import QueryDriftParams

    if args.action == "corpus":
        return corpus_here(args)
    params = QueryDriftParams(profile=args.profile, home=args.home, window=args.window, hours=args.hours)
    settings = params.settings()  # fail fast on bad config, before Prefect starts
    if args.action == "calibrate":
        return calibrate_here(settings, settings.drift.query_window)
    from lockgate.drift import production_questions
    from lockgate.querylog import require_log
    from lockgate.workspace import Workspace

    workspace = Workspace.open(settings)  # what the flow would refuse, refused before Prefect starts
    production_questions(workspace.registry, workspace.artifacts)
    require_log(workspace.serving.query_log)
    with run_flow(settings.home_path, "normal", command="query-drift") as run:
        from flows.drift import query_drift

        results = query_drift(params)
    print()
    for result in results:
        if result.report is None:
            print(f"{result.variant}: not judged: {result.not_judged}")
            continue
        from lockgate.drift import describe_verdict

        verdict = "DRIFT" if result.report.drifted else "no drift"
        print(f"{result.variant}: {verdict}: {describe_verdict(result.report)}")
        if result.alarm != "none":
            print(f"  alarm: {'lockgate.drift.detected sent' if result.alarm == 'sent' else 'held back (cooldown)'}")
        if result.report.html_path:
            print(f"  report: {result.report.html_path}")
    if not results:
        print("the query log has no questions yet")
    print(f"full log {run.log_path}")
    return 0


def corpus_here(args: argparse.Namespace) -> int:
    """Run the corpus-drift flow and print its verdict."""
    from flows.params import CorpusDriftParams

    params = CorpusDriftParams(profile=args.profile, home=args.home, corpus_dir=args.corpus)
    settings = params.settings()  # fail fast on bad config, before Prefect starts
    from lockgate.corpus import check_corpus_dir
    from lockgate.references import CORPUS_BOOK, corpus_reference_texts
    from lockgate.stores.aliases import home_aliases
    from lockgate.workspace import Workspace

    check_corpus_dir(settings.resolve(settings.data.corpus_dir))
    workspace = Workspace.open(settings)  # what the flow would refuse, refused before Prefect starts
    serving = home_aliases(workspace.home).serving(settings.vector_store.collection)
    if serving is None:
        from lockgate.errors import DataError

        raise DataError(
            f"index {settings.vector_store.collection}: nothing serves yet in {workspace.home}; "
            "run `python -m flows refresh` first"
        )
    corpus_reference_texts(workspace.home / CORPUS_BOOK, serving, workspace.artifacts, workspace.signing)
    with run_flow(settings.home_path, "normal", command="corpus-drift") as run:
        from flows.drift import corpus_drift

        result = corpus_drift(params)
    print()
    if result.report is None:
        print(f"{result.collection}: not judged: {result.not_judged}")
    else:
        from lockgate.drift import describe_verdict

        verdict = "DRIFT" if result.report.drifted else "no drift"
        print(f"{result.collection}: {verdict}: {describe_verdict(result.report)}")
        print(f"  {result.chunks} chunks against the {result.reference_chunks} the serving index was built from")
        if result.alarm != "none":
            print(f"  alarm: {'lockgate.drift.detected sent' if result.alarm == 'sent' else 'held back (cooldown)'}")
        if result.report.html_path:
            print(f"  report: {result.report.html_path}")
    print(f"full log {run.log_path}")
    return 0


def calibrate_here(settings: Any, window: int) -> int:
    """Calibrate drift for windows of ``window`` questions against production's training questions."""
    from lockgate.drift import calibrate, commit_calibration, production_questions
    from lockgate.references import reference_vectors
    from lockgate.workspace import Workspace
    from tasks.common import embedder_of

    workspace = Workspace.open(settings)
    texts = production_questions(workspace.registry, workspace.artifacts)
    embedder = embedder_of(settings.embeddings, workspace.exported_models)
    reference = reference_vectors(texts, embedder, workspace.artifacts, workspace.signing)
    calibration = calibrate(reference.vectors, window, settings.drift)
    folder = commit_calibration(calibration, workspace.artifacts)
    scores = sorted(calibration.null_scores)
    print(
        f"{calibration.method} for windows of {window} questions against production's {len(texts)} training questions\n"
        f"threshold {calibration.threshold:.4g} at false-alarm rate {calibration.false_alarm_rate} "
        f"({len(scores)} resamples: median {scores[len(scores) // 2]:.4g}, max {scores[-1]:.4g})\n"
        f"recorded {folder} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``drift`` to the ``lockgate`` command line."""
    drift = add_command(subparsers, "drift", cmd_drift)
    drift.add_argument("action", choices=["queries", "corpus", "calibrate"], help="what to check (or calibrate)")
    drift.add_argument("--window", type=int, default=None, help="questions per window (default drift.query_window)")
    drift.add_argument("--hours", type=float, default=None, help="queries: only the last this many hours")
    drift.add_argument(
        "--corpus", default=None, metavar="DIR", help="corpus: the folder to compare (default data.corpus_dir)"
    )

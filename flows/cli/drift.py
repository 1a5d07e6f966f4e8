"""``lockgate drift queries|calibrate``: served questions against production's, and the threshold judging them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from flows.cli._common import add_command, run_flow


def cmd_drift(args: argparse.Namespace) -> int:
    """query drift: 'queries' checks what users asked, 'calibrate' sets the threshold

    'queries' runs the query-drift flow: the last drift.query_window questions of each variant in
    the gateway's query log (of the last drift.query_hours, if set) against production's training
    questions, judged by a p-value at drift.false_alarm_rate; a drift emits lockgate.drift.detected
    (at most once per drift.cooldown_s) and writes Evidently's HTML report. 'calibrate' draws
    drift.resamples same-distribution windows of --window questions from production's training
    questions, prints the threshold they set and records the calibration. Exit 0 either way (a
    drift is a finding); 2 when there is no production model or no query log.
    """
    from flows.params import QueryDriftParams

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
    drift.add_argument("action", choices=["queries", "calibrate"], help="what to do")
    drift.add_argument("--window", type=int, default=None, help="questions per window (default drift.query_window)")
    drift.add_argument("--hours", type=float, default=None, help="queries: only the last this many hours")

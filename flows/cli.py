"""The ``lockgate`` command line: run the release pipeline and look at the registry."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flows import cli_index, cli_prompts, cli_serve

EXIT_FAILED = 1  # a stage failed (crash, dead service): see the message, maybe retry
EXIT_BAD_INPUT = 2  # the data, the settings or the arguments are wrong: fix them
EXIT_REJECTED = 3  # the pipeline ran and the gate rejected the candidate


class _NoTracebackForVerdicts(logging.Filter):
    """Show input and config errors as one clear line: they are verdicts, not crashes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from lockgate.errors import ConfigError, DataError, GateRejected

        if record.exc_info and isinstance(record.exc_info[1], ConfigError | DataError | GateRejected):
            record.msg = f"{record.getMessage().splitlines()[0]} {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_verdict_tracebacks() -> None:
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_NoTracebackForVerdicts())


def _prefect_defaults(home: Path) -> None:
    # Keep Prefect's database, results and cache beside Lockgate's state unless the user chose.
    if "PREFECT_HOME" not in os.environ:
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    from lockgate.offline import apply_offline_defaults

    apply_offline_defaults()


def cmd_release(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.params import ReleaseParams
    from lockgate.errors import ConfigError, GateRejected

    try:
        params = ReleaseParams(
            profile=args.profile,
            scenario=args.scenario,
            max_steps=args.max_steps,
            home=args.home,
            decision_mode=args.decision_mode,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid arguments: {problems}") from None
    settings = params.settings()  # fail fast on bad config
    from lockgate.policy import load_policy

    load_policy(settings.policy_path)  # and on a bad gate policy
    _prefect_defaults(settings.home_path)
    from flows.console import Mode, print_summary, quiet_libraries, release_console

    mode: Mode = "json" if args.json else "quiet" if args.quiet else "normal"
    quiet_libraries()  # before the pipeline imports them
    from flows.pipeline import release, summary_markdown

    _quiet_verdict_tracebacks()
    code = 0
    with release_console(settings.home_path / "logs", mode) as log_path:
        try:
            summary = release(params)
        except GateRejected as rejected:
            summary, code = rejected.details, EXIT_REJECTED  # type: ignore[assignment]
    print_summary(summary, log_path, mode, summary_markdown(summary))  # after the console: to stdout
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from lockgate.digest import short
    from lockgate.registry import describe_state, open_registry

    settings = StageParams(profile=args.profile, home=args.home).settings()
    state = open_registry(settings.registry, Path(settings.registry_dir)).snapshot()
    if args.json:
        print(state.model_dump_json(indent=2))
        return 0
    print(describe_state(state))
    print("\nhistory (newest last):")
    for move in state.history[-10:]:
        print(f"  {move.at} {move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}  {move.reason}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from lockgate.digest import short
    from lockgate.registry import open_registry

    settings = StageParams(profile=args.profile, home=args.home).settings()
    move = open_registry(settings.registry, Path(settings.registry_dir)).rollback(args.alias, reason=args.reason)
    print(f"{move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}")
    _emit_rollback(settings.home_path, move.alias, move.previous, move.current, move.reason)
    return 0


def _emit_rollback(home: Path, alias: str, previous: str | None, current: str | None, reason: str) -> None:
    """``lockgate.model.rolled_back``, so automations (and the serving layer) hear of it.

    Sent to the Prefect server ``PREFECT_API_URL`` names; without one there is nobody to hear
    it, and starting a temporary server for it would cost seconds, so it is not sent.
    """
    if not os.environ.get("PREFECT_API_URL"):
        return
    _prefect_defaults(home)
    from prefect.events import emit_event

    from lockgate import events

    emit_event(
        event=events.MODEL_ROLLED_BACK,
        resource=events.model_resource(previous or "none"),
        payload={"alias": alias, "previous": previous, "current": current, "reason": reason},
    )


def cmd_gate(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from lockgate.policy import explain, load_policy

    settings = StageParams(profile=args.profile, home=args.home).settings()
    path = Path(args.policy) if args.policy else settings.policy_path
    policy = load_policy(path)
    if args.json:
        print(json.dumps({"path": str(path), "digest": policy.digest, "policy": policy.model_dump(mode="json")}))
    else:
        print(f"{path}\n")
        print(explain(policy))
    return 0


def cmd_prep(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from lockgate.artifacts import LocalArtifactStore
    from lockgate.prep import snapshot_dataset
    from lockgate.readers import is_url

    settings = StageParams(profile=args.profile, home=args.home).settings()
    sources = [f if is_url(f) else str(Path(f).resolve()) for f in args.files] if args.files else settings.sources
    snapshot = snapshot_dataset(sources, settings.data, LocalArtifactStore(Path(settings.artifacts_dir)))
    if args.json:
        fields = ("digest", "shape", "n_input", "counts", "pii_found", "train_path", "eval_path", "quarantine_path")
        out = {k: getattr(snapshot, k) for k in fields}
        out.update(snapshot_path=snapshot.path, card_path=snapshot.card_path, sources=sources)
        print(json.dumps(out, indent=2))
        return 0
    print(Path(snapshot.card_path).read_text(encoding="utf-8"))
    print(f"snapshot: {snapshot.path}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from lockgate.settings import list_profiles

    if args.list:
        print("\n".join(list_profiles()))
        return 0
    settings = StageParams(profile=args.profile, home=args.home).settings()
    print(json.dumps(settings.model_dump(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgate",
        description="Gated release pipelines for LLMs: prep -> Axolotl fine-tune -> quantize -> "
        "refresh index -> Ragas eval -> drift -> gate -> promote.",
        epilog="Exit codes: 0 success, 1 a stage failed, 2 bad input, settings or arguments, "
        "3 the gate rejected the candidate.",
    )
    parser.add_argument(
        "--profile",
        default="embedded",
        help="a settings profile shipped with lockgate (lockgate/profiles/; profiles/ in a checkout), default embedded",
    )
    parser.add_argument("--home", default=None, help="state folder; default from the profile (.lockgate)")
    sub = parser.add_subparsers(dest="command", required=True)

    rel = sub.add_parser(
        "release",
        help="run the whole release pipeline once",
        description="Run the release flow end to end and print what it decided, with timings.",
    )
    rel.add_argument(
        "--scenario",
        default="normal",
        choices=["normal", "no-training", "shuffled-labels"],
        help="'normal' trains for real; the others sabotage the candidate so the gate rejects it",
    )
    rel.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    rel.add_argument(
        "--decision-mode",
        default=None,
        choices=["auto", "manual", "dry_run"],
        help="override gates.decision_mode: manual waits for approval in the Prefect UI; dry_run moves nothing",
    )
    shown = rel.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print only errors and the closing summary")
    shown.add_argument("--json", action="store_true", help="print only the summary, as one JSON object on stdout")
    rel.set_defaults(func=cmd_release)

    st = sub.add_parser("status", help="show registry aliases and recent history")
    st.add_argument("--json", action="store_true", help="print the whole registry state as JSON")
    st.set_defaults(func=cmd_status)

    rb = sub.add_parser(
        "rollback",
        help="point an alias back where it was before its last move",
        description="Step an alias back; rolling production back revokes the version it leaves (the gate will "
        "not promote it again). With PREFECT_API_URL set, emits lockgate.model.rolled_back to that server.",
    )
    rb.add_argument("--alias", default="production", choices=["candidate", "canary", "production"])
    rb.add_argument("--reason", default="manual rollback", help="recorded in the history")
    rb.set_defaults(func=cmd_rollback)

    ga = sub.add_parser(
        "gate",
        help="the gate policy: 'explain' prints it in words",
        description="Print the gate policy (gates.policy of the profile, or --policy FILE) in words, "
        "after validating it. A bad policy is one line naming the file and every bad field, exit 2.",
    )
    ga.add_argument("action", choices=["explain"], help="what to do with the policy")
    ga.add_argument("--policy", default=None, help="a policy file instead of the profile's gates.policy")
    ga.add_argument("--json", action="store_true", help="print the validated policy and its digest as JSON")
    ga.set_defaults(func=cmd_gate)

    pr = sub.add_parser(
        "prep",
        help="run the dataset prep stage alone and print its card",
        description="Read, validate, redact, dedupe and split the given files (default: the profile's "
        "data.sources) into a dataset snapshot under the state folder, and print its card: every "
        "input record's outcome, and that they add up. Exit 0 when a snapshot was written, 2 when "
        "the input leaves nothing usable.",
    )
    pr.add_argument("files", nargs="*", help="JSONL, CSV or Parquet files, local or fsspec URLs (s3://, gs://...)")
    pr.add_argument("--json", action="store_true", help="print one JSON object: paths, digest and counts per outcome")
    pr.set_defaults(func=cmd_prep)

    se = sub.add_parser("settings", help="print the resolved settings of a profile")
    se.add_argument("--list", action="store_true", help="list the profiles instead")
    se.set_defaults(func=cmd_settings)
    cli_index.register(sub)
    cli_prompts.register(sub)
    cli_serve.register(sub)
    return parser


def _check_profile(name: str) -> None:
    """--profile names a shipped profile, for every command, before any work starts."""
    from lockgate.errors import ConfigError
    from lockgate.settings import list_profiles

    known = list_profiles()
    if name not in known:
        raise ConfigError(f"--profile {name!r} is not a profile; known profiles: {', '.join(known)}")


def _unreachable_api(exc: RuntimeError) -> str | None:
    """One line for Prefect's 'no API' errors (its ephemeral server too slow to start, or the
    server PREFECT_API_URL names not answering); None for any other RuntimeError."""
    text = str(exc)
    if text.startswith("Timed out while attempting to connect to ephemeral Prefect API server"):
        return (
            "the temporary Prefect API server did not start in time (a busy machine?): raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start one with `make server` and set PREFECT_API_URL"
        )
    if text.startswith("Failed to reach API at"):
        return f"{text.rstrip('.')}: is the Prefect server PREFECT_API_URL names running?"
    return None


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from lockgate.errors import ConfigError, DataError, LockgateError
    from lockgate.offline import apply_offline_defaults

    apply_offline_defaults()  # before anything imports Prefect, which reads its settings once
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # sentence-transformers shows a progress bar per encode call while its logger is at INFO.
    for noisy in ("httpx", "httpcore", "urllib3", "milvus_lite", "pymilvus", "sentence_transformers", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        _check_profile(args.profile)
        result: Any = args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        result = EXIT_BAD_INPUT
    except ValidationError as exc:  # --profile, --home and other arguments checked by a params model
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid arguments: {problems}", file=sys.stderr)
        result = EXIT_BAD_INPUT
    except LockgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        result = EXIT_FAILED
    except RuntimeError as exc:
        if (reason := _unreachable_api(exc)) is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        result = EXIT_FAILED
    # The ephemeral Prefect server logs its shutdown at exit; the verdict above is the last word.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())

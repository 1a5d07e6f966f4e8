"""The ``lockgate`` command line (``python -m flows``): run the release pipeline and look at the registry.

``main`` and the parser live here; each command group is a module that adds its sub-commands
with ``register(subparsers)``, and a command's ``--help`` is its function's docstring
(``_common.add_command``). What they share (exit codes, settings from the arguments, the
preamble before a flow) is in ``_common``; what the terminal shows while a flow runs, in
``console``. The top of the import graph: may import ``flows``, ``tasks`` and ``lockgate``;
no flow or task imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from flows.cli import drift, finetune, gate, index, monitor, prep, prompts, registry, release, serve, settings, verify
from flows.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REJECTED, EXIT_TERMINATED, Terminated

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_REJECTED", "EXIT_TERMINATED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``lockgate`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="lockgate",
        description="Gated release pipelines for LLMs: prep -> Axolotl fine-tune -> quantize -> "
        "refresh index -> Ragas eval -> drift -> gate -> promote.",
        epilog="Exit codes: 0 success, 1 a stage failed, 2 bad input, settings or arguments, "
        "3 the gate rejected the candidate, 143 stopped by SIGTERM.",
    )
    parser.add_argument(
        "--profile",
        default="embedded",
        help="a settings profile shipped with lockgate (lockgate/profiles/; profiles/ in a checkout), default embedded",
    )
    parser.add_argument("--home", default=None, help="state folder; default from the profile (.lockgate)")
    sub = parser.add_subparsers(dest="command", required=True)
    # The order here is the order `--help` lists the commands in.
    for group in (release, finetune, registry, gate, prep, settings, index, prompts, serve, drift, monitor, verify):
        group.register(sub)
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
    """Run one ``lockgate`` command; returns its exit code."""
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
    except Terminated as exc:
        print(f"error: {exc}", file=sys.stderr)
        result = EXIT_TERMINATED
    except RuntimeError as exc:
        if (reason := _unreachable_api(exc)) is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        result = EXIT_FAILED
    # The ephemeral Prefect server logs its shutdown at exit; the verdict above is the last word.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    return int(result)

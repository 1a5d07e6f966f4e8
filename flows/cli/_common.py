"""What every ``lockgate`` command shares: exit codes, settings from the arguments, and the
preamble before a Prefect flow runs.

The base of the package: command modules import it; it imports no command module (only the
console, which imports nothing of ``flows`` but ``flows.params``), so no import runs in a circle.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.cli.console import Mode
    from lockgate.settings import LockgateSettings

EXIT_FAILED = 1  # a stage failed (crash, dead service): see the message, maybe retry
EXIT_BAD_INPUT = 2  # the data, the settings or the arguments are wrong: fix them
EXIT_REJECTED = 3  # the pipeline ran and the gate rejected the candidate
EXIT_TERMINATED = 128 + signal.SIGTERM  # stopped by SIGTERM (143, as for a process SIGTERM killed)


class Terminated(Exception):
    """A command's flow was stopped by SIGTERM; what the command started has been stopped."""


def settings_of(args: argparse.Namespace) -> LockgateSettings:
    """The settings that ``--profile`` and ``--home`` name."""
    from flows.params import StageParams

    return StageParams(profile=args.profile, home=args.home).settings()


def add_command(subparsers: Any, name: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """Add the sub-command ``name``, carried out by ``run``; returns its parser, for its arguments.

    ``run``'s docstring is what the user reads: its first line is the command's line in
    ``lockgate --help``, the paragraph after it (if any) what ``lockgate NAME --help`` says
    (argparse refolds its lines).
    """
    summary, _, description = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=summary, description=description or None)
    parser.set_defaults(func=run)
    return parser


def prefect_defaults(home: Path) -> None:
    """Point Prefect at the state folder and the offline defaults; call before Prefect is imported."""
    # Keep Prefect's database, results and cache beside Lockgate's state unless the user chose.
    if "PREFECT_HOME" not in os.environ:
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    from lockgate.offline import apply_offline_defaults

    apply_offline_defaults()


class NoTracebackForVerdicts(logging.Filter):
    """Show input and config errors as one clear line: they are verdicts, not crashes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from lockgate.errors import ConfigError, DataError, GateRejected

        verdict = record.exc_info[1] if record.exc_info else None
        if isinstance(verdict, ConfigError | DataError | GateRejected):
            # Prefect's first line ends with the exception's repr: say its message once instead.
            first = record.getMessage().splitlines()[0].removesuffix(repr(verdict)).rstrip(": ")
            record.msg = f"{first}: {verdict}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_verdict_tracebacks() -> None:
    """Log a flow's verdicts (bad input, bad settings, a rejection) without their tracebacks."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(NoTracebackForVerdicts())


@dataclass
class CommandRun:
    """What a flow-running command knows once its flow is done.

    Attributes:
        log_path: the log file the console wrote (None without a console).
        result: what the flow returned; set by the command, or the rejection's details.
        exit_code: 0, or ``EXIT_REJECTED`` when the gate rejected the candidate.
    """

    log_path: Path | None = None
    result: Any = None
    exit_code: int = 0


@contextmanager
def run_flow(
    home: Path, mode: Mode | None = None, command: str = "release", catch_rejected: bool = False
) -> Iterator[CommandRun]:
    """The preamble of a command that runs a Prefect flow; import the flow inside the block.

    Prefect keeps its state under ``home``; with a console ``mode`` the libraries are quieted
    before the flow imports them and the terminal shows one line per stage while everything goes
    to a log file under ``home/logs``. With ``catch_rejected`` a ``GateRejected`` ends the block
    with its details as the result and ``EXIT_REJECTED``.
    """
    prefect_defaults(home)
    from flows.cli.console import quiet_libraries, release_console
    from lockgate.errors import GateRejected

    if mode is not None:
        quiet_libraries()  # before the flow imports them
    # Prefect sets up its logging on this import (the flow's module would do it too); the
    # traceback filter and the console wrap the handlers it makes.
    import prefect.main  # noqa: F401

    quiet_verdict_tracebacks()
    run = CommandRun()
    console: AbstractContextManager[Path | None] = nullcontext()
    if mode is not None:
        console = release_console(home / "logs", mode, command)
    with sigterm_unwinds() as terminated, console as log_path:
        run.log_path = log_path
        try:
            yield run
        except GateRejected as rejected:
            if not catch_rejected:
                raise
            run.result, run.exit_code = rejected.details, EXIT_REJECTED
        except BaseException as stopped:
            if not (terminated.is_set() or _by_sigterm(stopped)):
                raise
            # Whatever the unwinding raised on its way (Prefect reporting the crash to a temporary
            # server that the same signal stopped: httpx.ConnectError) is not the news.
            raise Terminated("stopped by SIGTERM: what this command had started is stopped") from stopped


def _by_sigterm(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, Prefect's ``TerminationSignal``: inside a
    flow, Prefect turns SIGTERM into that exception itself, and reports the crash before it goes on."""
    from prefect.exceptions import TerminationSignal

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TerminationSignal):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _unwind(terminated: threading.Event) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        terminated.set()
        raise SystemExit(128 + signum)

    return handler


@contextmanager
def sigterm_unwinds() -> Iterator[threading.Event]:
    """While a command runs (its flows and what it does between them), SIGTERM (a job's timeout,
    ``docker stop``, a service manager) ends it as Ctrl-C does: the stack unwinds, so the
    ``finally`` blocks stop what the command started (vLLM engines, a gateway), instead of the
    process vanishing and leaving them running. Inside a flow Prefect's own handler does the same
    (``TerminationSignal``). The event it yields says whether this handler fired."""
    terminated = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield terminated
        return
    previous = signal.signal(signal.SIGTERM, _unwind(terminated))
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)

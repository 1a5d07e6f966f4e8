"""What a person sees in the terminal while a release runs, and what goes to its log file.

The terminal gets one line per finished stage, warnings that concern the user (their data,
their settings) and errors; everything, third-party chatter included, goes to a log file
under the state folder, which the closing summary names. The summary is a table in the
terminal; the Prefect UI keeps its markdown artifact.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from flows.params import STAGE_DONE

Mode = Literal["normal", "quiet", "json"]
OWN_LOGGERS = ("lockgate", "flows", "tasks")
_FINISHED = re.compile(r"^Finished in state (\w+)")
_RUN_SUFFIX = re.compile(r"-[0-9a-f]{3}$")  # Prefect's task run names: '<task>-<3 hex>'

# Progress bars and loguru lines of the libraries under the pipeline; set before they are
# imported. The trainer runs in its own process with its own log (its progress bar is parsed).
QUIET_LIBRARIES = {
    "TRANSFORMERS_VERBOSITY": "error",
    "LLM_COMPRESSOR_LOG_LEVEL": "ERROR",
    "GRPC_VERBOSITY": "NONE",  # gRPC's C core (under Milvus Lite) writes straight to stderr
}


class StageLines(logging.Filter):
    """Filter for the console handler: one line per finished task, the user's warnings, errors."""

    def __init__(self, mode: Mode) -> None:
        super().__init__()
        self.mode = mode
        self.last = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.startswith(OWN_LOGGERS)
        if not own and record.name not in ("prefect.flow_runs", "prefect.task_runs"):
            # Libraries' records, errors too (pymilvus logs an expected 'no such alias' as an
            # ERROR with a traceback): the log file has them; a real failure reaches the
            # terminal through the stage that hit it.
            return False
        if record.levelno >= logging.ERROR:
            return True
        if self.mode != "normal":
            return False
        if record.name == "prefect.task_runs":
            match = _FINISHED.match(record.getMessage())
            if match is None:
                return record.levelno >= logging.WARNING
            task = _RUN_SUFFIX.sub("", str(getattr(record, "task_run_name", "task")))
            return self.finished(record, task, match.group(1).lower())
        if isinstance(stage := getattr(record, STAGE_DONE, None), str):
            # A stage that is no task of this process (a fine-tune on a work pool) says it is done.
            return self.finished(record, stage, "completed")
        if record.name == "prefect.flow_runs":
            message = record.getMessage()
            if message.startswith("Beginning"):
                # The first stage's time counts from here, not from starting Prefect's server.
                self.last = time.monotonic()
            return record.levelno >= logging.WARNING or message.startswith(("Beginning", "release "))
        return record.levelno >= logging.WARNING

    def finished(self, record: logging.LogRecord, stage: str, state: str) -> bool:
        """Turn ``record`` into ``<stage>: <state> (<seconds since the last such line> s)``."""
        now = time.monotonic()
        record.msg, record.args = f"{stage}: {state} ({now - self.last:.1f} s)", ()
        self.last = now
        return True


class _ConsoleFormat(logging.Formatter):
    """``12:03:04  prep-dataset: completed (1.1 s)``; the level only where it is not INFO."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        return f"{self.formatTime(record, self.datefmt)}  {level}{record.getMessage()}"


def _console_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    """Every handler that writes to the terminal: the root's, and those libraries attach to
    their own loggers (torch does)."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    return [
        (logger, h)
        for logger in loggers
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout)
    ]


def quiet_libraries() -> None:
    """Environment that keeps library progress bars and loguru lines out of the terminal."""
    for key, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(key, value)


@contextmanager
def release_console(log_dir: Path, mode: Mode, command: str = "release") -> Iterator[Path]:
    """Route this process's logging for a release (or another ``command``): everything to a new
    file in ``log_dir`` (yielded), the console to :class:`StageLines`. Call after Prefect is
    imported (its logging set-up replaces the root handlers)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{command}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    logging.captureWarnings(True)  # warnings.warn from libraries: to the file, not the terminal
    stage_lines = StageLines(mode)
    for library in ("pymilvus", "torch"):  # they attach their own terminal handlers on import
        with contextlib.suppress(ImportError):
            importlib.import_module(library)
    consoles = _console_handlers()
    formats = [h.formatter for _, h in consoles]
    # Loggers that keep their records from the root write them to the file themselves.
    own_handlers = [logger for logger, _ in consoles if logger is not root and not logger.propagate]
    for _, handler in consoles:
        handler.addFilter(stage_lines)
        handler.setFormatter(_ConsoleFormat())
    for logger in own_handlers:
        logger.addHandler(to_file)
    quieted = _quiet_in_process_bars()
    # Libraries that print (transformers announces W&B's offline mode on import) write to the
    # log, so stdout carries only the summary (--json: one JSON object).
    printed = path.open("a", encoding="utf-8", buffering=1)
    try:
        with contextlib.redirect_stdout(printed):
            yield path
    finally:
        printed.close()
        for (_, handler), format_ in zip(consoles, formats, strict=True):
            handler.removeFilter(stage_lines)
            handler.setFormatter(format_)
        for logger in own_handlers:
            logger.removeHandler(to_file)
        root.removeHandler(to_file)
        to_file.close()
        root.setLevel(previous_level)
        logging.captureWarnings(False)
        quieted()


def _quiet_in_process_bars() -> Any:
    """Progress bars off in this process (llm-compressor's calibration bars, transformers' and
    huggingface_hub's); returns the undo. Not through TQDM_DISABLE: the trainer's process would
    inherit it, and its progress bar is how the launcher counts steps."""
    import tqdm.std
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars  # type: ignore[attr-defined]
    from transformers.utils import logging as hf_logging

    init = tqdm.std.tqdm.__init__

    def without_bar(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True  # over the caller's own disable=False (compressed-tensors passes one)
        init(self, *args, **kwargs)

    tqdm.std.tqdm.__init__ = without_bar  # type: ignore[method-assign]
    disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    def undo() -> None:
        tqdm.std.tqdm.__init__ = init  # type: ignore[method-assign]
        enable_progress_bars()
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]

    return undo


def summary_json(summary: Any, log_path: Path) -> str:
    """The release summary as JSON, naming its log file."""
    return json.dumps({**summary.model_dump(mode="json"), "log": str(log_path)}, indent=2)


def save_summary(summary: Any, log_path: Path) -> Path:
    """Keep the summary as JSON beside the run's log (``release-....json``), for scripts that
    read a release after the fact; returns its path."""
    path = log_path.with_suffix(".json")
    path.write_text(summary_json(summary, log_path) + "\n", encoding="utf-8")
    return path


def print_summary(summary: Any, log_path: Path, mode: Mode, markdown: str) -> None:
    """The release's closing words: a table in a terminal, plain markdown when piped, or JSON."""
    if mode == "json":
        print(summary_json(summary, log_path))
        return
    if not sys.stdout.isatty():
        print("\n" + markdown + f"\nFull log: `{log_path}`")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    verdict = markdown.splitlines()[0].removeprefix("# ")
    console.print()
    console.rule(f"[bold]{verdict}")
    for reason in summary.reasons:
        console.print(f"  - {reason}")
    metrics = Table(title="Metrics", title_justify="left")
    for column in ("metric", "challenger", "champion"):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in summary.metrics.items():
        baseline = summary.baseline.get(name)
        metrics.add_row(name, f"{value:.3f}", "-" if baseline is None else f"{baseline:.3f}")
    console.print(metrics)
    stages = Table(title="Stages", title_justify="left")
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for name, seconds in summary.timings_s.items():
        stages.add_row(name, f"{seconds:.1f}" + (" (cached)" if name in summary.cached else ""))
    console.print(stages)
    outputs = Table(title="Outputs", title_justify="left", show_header=False)
    for name, where in summary.outputs.items():
        if where:
            outputs.add_row(name, where)
    outputs.add_row("log", str(log_path))
    console.print(outputs)

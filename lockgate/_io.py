"""Small I/O helpers every module shares: strict YAML, atomic writes, JSONL files, file locks,
the user's cache folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml


class _CoreSchemaLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML with the 1.2 core schema's scalars instead of YAML 1.1's.

    PyYAML reads ``0300`` as octal 192, ``1:30`` as 90 and ``no`` as False; in a settings or
    policy file each of those is a silent wrong value. Here ``0300`` is three hundred, octal
    needs ``0o``, and only ``true``/``false`` are booleans.
    """


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_CoreSchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT, _BOOL)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CoreSchemaLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_CoreSchemaLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreSchemaLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


_CoreSchemaLoader.add_constructor(_INT, _construct_int)


def load_yaml(text: str) -> Any:
    """Parse YAML with core-schema scalars (see ``_CoreSchemaLoader``)."""
    return yaml.load(text, Loader=_CoreSchemaLoader)  # a SafeLoader subclass: safe


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/lockgate/<parts>`` (``~/.cache`` without it): what this machine can
    rebuild, kept across runs and state folders."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root.joinpath("lockgate", *parts)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container's limit sets it), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def atomic_write_text(path: Path, text: str, backup: bool = False) -> None:
    """Replace ``path`` with ``text`` so a crash leaves the old or the new file, never a mix.

    The data is fsynced before the rename and the folder after it, so the new name survives
    a power cut too.

    Args:
        backup: keep the file being replaced as ``<name>.bak`` (a hard link, made atomically).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if backup and path.exists():
            bak = path.with_name(path.name + ".bak")
            staged_bak = path.with_name(f".{path.name}.bak-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                staged_bak.unlink()
            os.link(path, staged_bak)
            os.replace(staged_bak, bak)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_jsonl(path: Path, rows: Iterable[Any], sort_keys: bool = False) -> Path:
    """One JSON object a line, UTF-8, keys in the order given (or sorted, with ``sort_keys``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=sort_keys) + "\n")
    return path


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by Lockgate."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@contextlib.contextmanager
def exclusive_lock(
    path: Path, wait_s: float | None, on_wait: Callable[[], None], poll_s: float = 0.5
) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    When another holder has it, ``on_wait`` is called once, then this waits: without limit when
    ``wait_s`` is None, else up to ``wait_s`` seconds, polling. Yields False (holding nothing) if
    the wait ran out, True while the lock is held.
    """
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            if wait_s is None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            elif not _poll_flock(handle, time.monotonic() + wait_s, poll_s):
                yield False
                return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _poll_flock(handle: Any, deadline: float, poll_s: float) -> bool:
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    return False

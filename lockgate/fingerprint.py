"""Cache keys that name everything a stage's result depends on, and nothing else.

A stage's key is a digest of its semantic inputs (records by their content digest, settings
by value), the library source it runs (its module and every ``lockgate`` module it imports,
transitively), the environment it runs in (installed distributions and the lock file), and
what it names by path but must know by content: the trainer environment behind
``axolotl_bin``, the embedder's weights behind its name, the prompt template's text.

No absolute path enters a key: moving the checkout or the state folder re-runs nothing,
and changing a prompt or a module re-runs the stages it affects and no others.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lockgate.digest import digest_file, digest_json, digest_tree
from lockgate.records import Record

LIBRARY_ROOT = Path(__file__).resolve().parent


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (LIBRARY_ROOT.parent / rel.with_suffix(".py"), LIBRARY_ROOT.parent / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _lockgate_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lockgate")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lockgate":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from lockgate import x` may be a module
    return found


def module_closure(modules: Iterable[str]) -> list[str]:
    """The ``lockgate`` modules these import, transitively (themselves and their parent packages included)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = _module_file(prefix)
            if path is None:
                continue
            seen.add(prefix)
            todo.extend(_lockgate_imports(path))
    return sorted(seen)


@lru_cache(maxsize=64)
def source_digest(*modules: str) -> str:
    """Digest of the library source these modules run: their files and every ``lockgate`` file they import."""
    entries = []
    for name in module_closure(modules):
        path = _module_file(name)
        assert path is not None
        entries.append([path.relative_to(LIBRARY_ROOT.parent).as_posix(), digest_file(path)])
    return digest_json(entries)


@lru_cache(maxsize=1)
def app_environment_digest() -> str:
    """The running environment: Python's version and every installed distribution's name and version."""
    dists = sorted(
        {f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions() if d.metadata["Name"]}
    )
    return digest_json({"python": sys.version_info[:3], "distributions": dists})


def lock_digest(project_root: Path) -> str:
    """Digest of the lock files under ``requirements/`` (by name and content).

    An installed copy of the library has none; the installed distributions then stand alone.
    """
    locks = sorted((project_root / "requirements").glob("*.lock"))
    return digest_json([[p.name, digest_file(p)] for p in locks])


def environment_digest(executable: Path) -> str:
    """What runs behind an executable (the trainer's, vLLM's Python): its virtual environment's
    Python and distributions.

    Two checkouts whose ``.venv-trainer`` links point at the same environment get the same
    digest; a rebuilt environment with other versions behind the same path gets another.
    A bare executable (no virtual environment around it) is known by its bytes.
    """
    real = executable.resolve()
    venv = real.parent.parent
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        return digest_json({"executable": digest_file(real) if real.is_file() else "missing"})
    version = next(
        (line.split("=", 1)[1].strip() for line in cfg.read_text().splitlines() if line.startswith("version")), ""
    )
    infos = venv.glob("lib/python*/site-packages/*.dist-info")
    dists = sorted(p.name.removesuffix(".dist-info").lower() for p in infos)
    return digest_json({"python": version, "distributions": dists})


@lru_cache(maxsize=8)
def weights_digest(model_path: str) -> str:
    """Digest of a model's files when it is a local folder, else its name (a hub id is pinned elsewhere)."""
    path = Path(model_path)
    if path.is_dir():
        return digest_tree(path)
    if path.is_file():
        return digest_file(path)
    return digest_json({"name": model_path})


def canonical(value: Any) -> Any:
    """A JSON-able, location-free form of a stage input.

    Records are known by their digest (their paths say where, not what), settings and other
    pydantic models by their values, dataclasses by their fields.

    Raises:
        ValueError: an absolute path would make the key depend on where the checkout is.
    """
    if isinstance(value, Record):
        return {"record": type(value).__name__, "digest": value.digest}
    if isinstance(value, BaseModel):
        # Settings may say which of their fields decide the result (``recipe``): how and where
        # a stage runs (a launcher, a timeout, a team) must not make it run again.
        recipe = getattr(value, "recipe", None)
        return canonical(recipe() if callable(recipe) else value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "path"}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and value.startswith("/")):
        raise ValueError(f"an absolute path cannot be part of a cache key: {value}")
    return value


def stage_cache_key(stage: str, modules: tuple[str, ...], inputs: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """The cache key of one stage run.

    Args:
        stage: the stage's name (two stages never share a key).
        modules: the library modules the stage runs (their imports are followed).
        inputs: the task's parameters by name.
        ignore: parameters that say where, not what (an output folder, an executable's path whose
            content is passed as a fingerprint instead).
    """
    skip = set(ignore)
    payload = {
        "stage": stage,
        "source": source_digest(*modules),
        "environment": app_environment_digest(),
        "locks": lock_digest(LIBRARY_ROOT.parent),
        "inputs": {k: canonical(v) for k, v in sorted(inputs.items()) if k not in skip},
    }
    return digest_json(payload)

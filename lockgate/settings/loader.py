"""Settings from a profile, the environment and overrides, validated all at once."""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockgate._io import load_yaml
from lockgate.errors import ConfigError
from lockgate.settings.root import LockgateSettings


def _format_errors(source: str, exc: ValidationError) -> str:
    """Every problem at once, on one line, each naming its field."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid settings ({source}): {exc.error_count()} problem(s): " + "; ".join(problems)


def shipped_profiles() -> Traversable:
    """The profiles folder, package data of ``lockgate``: found in a checkout (where ``profiles/``
    links to it) and in an installed package alike."""
    return resources.files("lockgate") / "profiles"


def profile_path(name: str) -> Traversable:
    """The file that holds a named profile."""
    return shipped_profiles() / f"{name}.yaml"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with Lockgate."""
    return sorted(p.name.removesuffix(".yaml") for p in shipped_profiles().iterdir() if p.name.endswith(".yaml"))


def load_settings(
    profile: str = "embedded", overrides: dict[str, Any] | None = None, profile_file: Path | Traversable | None = None
) -> LockgateSettings:
    """Build the settings from a profile, the environment and explicit overrides.

    Args:
        profile: profile name under ``profiles/`` (ignored when ``profile_file`` is given).
        overrides: nested values that win over everything else (e.g. from a flow parameter).
        profile_file: an explicit YAML file instead of a named profile.

    Raises:
        ConfigError: naming the file and every bad field.
    """
    path = profile_file or profile_path(profile)
    if not path.is_file():
        raise ConfigError(f"profile {profile!r} not found at {path}; known profiles: {list_profiles()}")
    try:
        values = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile must be a mapping, got {type(values).__name__}")
    values.setdefault("profile", Path(path.name).stem)
    # Priority: explicit overrides > LOCKGATE_* environment > profile file > defaults.
    # pydantic-settings ranks init kwargs above the environment, so the layers are merged
    # here and handed over as one set of init values.
    values = _deep_merge(_deep_merge(values, _env_values()), overrides or {})
    try:
        return LockgateSettings(**values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None


def _env_values() -> dict[str, Any]:
    """Nested values given by LOCKGATE_* environment variables.

    A variable whose first part is not a setting is left to whoever owns it (scripts use
    LOCKGATE_ENVS, for instance), unless it has the nested form ``A__B``: that can only be a
    mistyped setting, and is reported rather than ignored.
    """
    import os

    known = set(LockgateSettings.model_fields)
    out: dict[str, Any] = {}
    for key, raw in os.environ.items():
        if not key.startswith("LOCKGATE_"):
            continue
        parts = key[len("LOCKGATE_") :].lower().split("__")
        if parts[0] not in known:
            if len(parts) > 1:
                raise ConfigError(f"environment variable {key} names no setting; areas: {sorted(known)}")
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(key, raw)
    return out


def _parse_env_value(key: str, raw: str) -> Any:
    """A value from the environment: JSON, a YAML flow mapping or list, or a plain string.

    Scalars are left as strings for the settings model to parse, so YAML 1.1's surprises
    never apply: ``0300`` is three hundred (not octal 192), ``1:30`` is not 90, ``no`` is not
    False unless the field is a bool.

    Raises:
        ConfigError: a mapping or list that does not parse, naming the variable.
    """
    text = raw.strip()
    if not text.startswith(("{", "[")):
        return raw
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = load_yaml(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"environment variable {key}: not a valid mapping or list ({problem}): {raw!r}") from None
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged

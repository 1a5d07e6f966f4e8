"""API keys, stored only as SHA-256 digests: the file can be read without revealing a key."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lockgate._io import atomic_write_text
from lockgate.errors import ConfigError

KEY_PREFIX = "lg-"


class ApiKey(BaseModel):
    """One client's key (by digest) and its budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Who the key belongs to.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, hex.")
    tokens_per_minute: int = Field(ge=1, description="Prompt + completion tokens per minute.")
    requests_per_minute: int = Field(ge=1, description="Requests per minute.")


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = []


def key_digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """Keys by digest, read from a JSON file (``{"keys": [...]}``)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest = {k.sha256: k for k in keys}

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """Read the key file; a missing file is an empty store (every request is refused).

        Raises:
            ConfigError: the file is not a valid key file, naming it.
        """
        if not path.exists():
            return cls([])
        try:
            return cls(KeyFile.model_validate_json(path.read_text(encoding="utf-8")).keys)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: not a valid key file: {problems}") from None

    def lookup(self, key: str | None) -> ApiKey | None:
        """The key's record, or None for a missing or unknown key (compared by digest only)."""
        if not key:
            return None
        return self._by_digest.get(key_digest(key))

    def __len__(self) -> int:
        return len(self._by_digest)


def add_key(path: Path, name: str, tokens_per_minute: int, requests_per_minute: int) -> str:
    """Create a key for ``name`` (replacing its old one), store its digest, and return the key.

    The key itself is returned once and never stored.
    """
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    current = KeyFile.model_validate_json(path.read_text(encoding="utf-8")) if path.exists() else KeyFile()
    record = ApiKey(
        name=name,
        sha256=key_digest(key),
        tokens_per_minute=tokens_per_minute,
        requests_per_minute=requests_per_minute,
    )
    current.keys = [k for k in current.keys if k.name != name] + [record]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(current.model_dump(), indent=2))
    return key

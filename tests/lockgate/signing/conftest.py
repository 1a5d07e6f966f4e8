"""Throw-away signing keys: every test that signs makes its own pair in its tmp_path, so no test
depends on ``make setup`` having run (nor ever sees a real key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.settings import SigningSettings
from lockgate.signing import ArtifactSigning, create_key_pair, open_signing


@pytest.fixture
def signing_settings(tmp_path: Path) -> SigningSettings:
    """``signing`` settings over a fresh key pair in ``tmp_path/keys``."""
    private, public = create_key_pair(tmp_path / "keys")
    return SigningSettings(private_key=str(private), public_key=str(public))


@pytest.fixture
def signing(signing_settings: SigningSettings) -> ArtifactSigning:
    return open_signing(signing_settings)


@pytest.fixture
def signing_env(signing_settings: SigningSettings, monkeypatch: pytest.MonkeyPatch) -> SigningSettings:
    """The fresh key pair, named by environment variables as a deployment would (for flows and the CLI)."""
    monkeypatch.setenv("LOCKGATE_SIGNING__PRIVATE_KEY", signing_settings.private_key)
    monkeypatch.setenv("LOCKGATE_SIGNING__PUBLIC_KEY", signing_settings.public_key)
    return signing_settings

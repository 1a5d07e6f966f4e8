"""``lockgate verify``: an alias, a digest or a folder checked against its signature; 0 / 1 / 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import EXIT_BAD_INPUT, EXIT_FAILED, main
from lockgate.artifacts import LocalArtifactStore
from lockgate.registry import LocalRegistry
from lockgate.settings import SigningSettings
from lockgate.signing import open_signing
from tests.lockgate.signing.conftest import signing_env, signing_settings  # noqa: F401  (fixtures)

BASE = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x01" * 300, "tokenizer.json": b"{}"}


def commit(store: LocalArtifactStore, kind: str, files: dict[str, bytes]) -> Path:
    staged = store.staging(kind)
    for name, data in files.items():
        (staged / name).write_bytes(data)
    return store.commit(kind, staged)[1]


@pytest.fixture
def home(tmp_path: Path, signing_env: SigningSettings) -> tuple[Path, Path, Path]:  # noqa: F811
    """A state folder whose production model is a signed adapter over a signed base model."""
    home = tmp_path / "home"
    store = LocalArtifactStore(home / "artifacts", open_signing(signing_env))
    base = commit(store, "base-models", BASE)
    adapter = commit(
        store,
        "adapters",
        {"adapter_config.json": f'{{"base_model_name_or_path": "{base}"}}'.encode(), "adapter.safetensors": b"\x02"},
    )
    registry = LocalRegistry(home / "registry")
    registry.register("sha256:" + adapter.name + "0" * 48, str(adapter), {})
    registry.set_alias("production", "sha256:" + adapter.name + "0" * 48, "gate passed")
    return home, base, adapter


def test_verify_production_checks_the_adapter_and_its_base(
    home: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, base, adapter = home
    assert main(["--home", str(state), "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok  adapters/{adapter.name}: 2 files match" in out and f"ok  base-models/{base.name}: 3 files" in out
    assert main(["--home", str(state), "verify", adapter.name[:10]]) == 0
    assert main(["--home", str(state), "verify", str(base)]) == 0


def test_a_deleted_tokenizer_file_is_exit_1_naming_artifact_and_file(
    home: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, base, _ = home
    (base / "tokenizer.json").unlink()
    assert main(["--home", str(state), "verify", "production"]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err == f"error: artifact base-models/{base.name} refused: tokenizer.json is missing (it was signed)"


@pytest.mark.parametrize("ref", ["canary", "deadbeefdeadbeef", "no/such/folder"])
def test_a_ref_naming_nothing_is_exit_2(
    home: tuple[Path, Path, Path], ref: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(home[0]), "verify", ref]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: verify: ") and "\n" not in err

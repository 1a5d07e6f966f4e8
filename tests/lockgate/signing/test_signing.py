"""Signing at commit and verification of artifact folders: every tampering is refused, naming the
artifact and the file."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from lockgate.artifacts import ArtifactStore, LocalArtifactStore
from lockgate.artifacts.fsspec import FsspecArtifactStore
from lockgate.errors import ConfigError, LockgateError, TransientError
from lockgate.settings import SigningSettings
from lockgate.signing import (
    ArtifactSigning,
    TamperedError,
    create_key_pair,
    error_map,
    open_signing,
    signature_path,
    translate_signing_error,
    verify_folder,
)

MODEL = {"model.safetensors": b"\x00\x01" * 512, "config.json": b'{"a": 1}', "tokenizer.json": b'{"v": [1]}'}
ADAPTER = {"adapter_model.safetensors": b"\x07" * 256, "adapter_config.json": b'{"base_model_name_or_path": "x"}'}
REPORT = {"report.json": b'{"faithfulness": {"mean": 0.9}}'}


def committed(store: ArtifactStore, kind: str, files: dict[str, bytes]) -> Path:
    staged = store.staging(kind)
    for name, data in files.items():
        (staged / name).write_bytes(data)
    _, path = store.commit(kind, staged)
    return path


def flip_one_byte(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))


def add_a_file(folder: Path) -> None:
    (folder / "extra_weights.bin").write_bytes(b"payload")


def delete_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def alter_report(folder: Path) -> None:
    (folder / "report.json").write_text('{"faithfulness": {"mean": 0.99}}')


@pytest.fixture
def signed_store(store: ArtifactStore, signing: ArtifactSigning) -> ArtifactStore:
    """The conftest's store (local, and fsspec over memory://), signing every commit."""
    store.signing = signing  # type: ignore[attr-defined]  (both adapters take it; set after the fixture made them)
    return store


def test_a_commit_is_signed_and_verifies(signed_store: ArtifactStore, signing: ArtifactSigning) -> None:
    path = committed(signed_store, "quantized", MODEL)
    assert signature_path(path).is_file() and not (path / signature_path(path).name).exists()
    checked = verify_folder(signing, path)
    assert checked.files == 3 and checked.artifact == f"quantized/{path.name}"
    assert checked.signature_digest.startswith("sha256:")


@pytest.mark.parametrize(
    ("kind", "files", "tamper", "file", "words"),
    [
        ("quantized", MODEL, flip_one_byte, "model.safetensors", "was changed since it was signed"),
        ("adapters", ADAPTER, add_a_file, "extra_weights.bin", "was added after signing"),
        ("quantized", MODEL, delete_tokenizer, "tokenizer.json", "is missing (it was signed)"),
        ("evals", REPORT, alter_report, "report.json", "was changed since it was signed"),
    ],
    ids=["weights-byte", "adapter-file-added", "tokenizer-deleted", "eval-report-altered"],
)
def test_tampering_is_refused_naming_artifact_and_file(
    signed_store: ArtifactStore,
    signing: ArtifactSigning,
    kind: str,
    files: dict[str, bytes],
    tamper: Callable[[Path], None],
    file: str,
    words: str,
) -> None:
    path = committed(signed_store, kind, files)
    tamper(path)
    with pytest.raises(TamperedError) as refused:
        verify_folder(signing, path)
    assert refused.value.artifact == f"{kind}/{path.name}" and refused.value.file == file
    assert str(refused.value) == f"artifact {kind}/{path.name} refused: {file} {words}"
    assert "\n" not in str(refused.value)


def test_a_removed_signature_or_another_signers_signature_is_refused(
    tmp_path: Path, signing: ArtifactSigning, signing_settings: SigningSettings
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    path = committed(store, "adapters", ADAPTER)
    genuine = signature_path(path).read_bytes()

    signature_path(path).unlink()
    with pytest.raises(
        TamperedError, match=rf"adapters/{path.name} refused: {path.name}.sig \(its signature\) is missing"
    ):
        verify_folder(signing, path)

    # Someone with write access but not the key changes a file and signs with a key of their own.
    private, _ = create_key_pair(tmp_path / "attacker")
    forger = open_signing(SigningSettings(private_key=str(private), public_key=signing_settings.public_key))
    (path / "adapter_model.safetensors").write_bytes(b"\x08" * 256)
    shutil.rmtree(tmp_path / "resign", ignore_errors=True)
    forger.sign(path, signature_path(path))
    with pytest.raises(TamperedError, match=r"does not verify: .*Key mismatch"):
        verify_folder(signing, path)
    signature_path(path).write_bytes(genuine)  # the genuine signature names the changed file
    with pytest.raises(TamperedError, match=r"adapter_model.safetensors was changed"):
        verify_folder(signing, path)


def test_committing_identical_content_again_restores_a_lost_signature(tmp_path: Path, signing: ArtifactSigning) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    path = committed(store, "datasets", REPORT)
    signature_path(path).unlink()
    assert committed(store, "datasets", REPORT) == path
    verify_folder(signing, path)


def test_a_fetch_into_a_fresh_cache_brings_the_signature(tmp_path: Path, signing: ArtifactSigning) -> None:
    url = f"memory://lockgate-tests/signing-{os.getpid()}-{tmp_path.name}"
    path = committed(FsspecArtifactStore(url, tmp_path / "cache-a", signing), "quantized", MODEL)
    elsewhere = FsspecArtifactStore(url, tmp_path / "cache-b", signing)
    fetched = elsewhere.path_of("quantized", "sha256:" + path.name)
    assert fetched.is_dir() and verify_folder(signing, fetched).files == 3


def test_no_key_is_a_config_error_naming_the_setting_and_path(tmp_path: Path) -> None:
    settings = SigningSettings(private_key=str(tmp_path / "nope.pem"), public_key=str(tmp_path / "nope.pub"))
    store = LocalArtifactStore(tmp_path / "artifacts", open_signing(settings))
    with pytest.raises(ConfigError, match=rf"signing.private_key: no file at {tmp_path}/nope.pem .*make setup"):
        committed(store, "evals", REPORT)
    folder = tmp_path / "evals" / "x"
    folder.mkdir(parents=True)
    signature_path(folder).write_text("{}")
    with pytest.raises(ConfigError, match=r"signing.public_key: no file at"):
        verify_folder(open_signing(settings), folder)


def test_the_key_pair_is_private(tmp_path: Path) -> None:
    private, public = create_key_pair(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    before = private.read_bytes()
    assert create_key_pair(tmp_path / "k") == (private, public) and private.read_bytes() == before


def test_every_vendor_error_is_mapped() -> None:
    import cryptography.exceptions
    import sigstore.errors

    vendor = [
        cls
        for module in (sigstore.errors, cryptography.exceptions)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == module.__name__
    ]
    assert len(vendor) > 5
    for cls in vendor:
        exc = cls.__new__(cls)
        Exception.__init__(exc, "boom")
        mapped = translate_signing_error(exc, "quantized/abc", "abc.sig")
        assert isinstance(mapped, LockgateError), cls
    assert isinstance(
        translate_signing_error(sigstore.errors.NetworkError.__new__(sigstore.errors.NetworkError), "a", "f"),
        TransientError,
    )
    assert isinstance(translate_signing_error(ValueError("Signature mismatch: x"), "a", "f"), TamperedError)
    assert set(error_map()) >= {cryptography.exceptions.InvalidSignature, sigstore.errors.Error}


def test_other_methods_need_their_material() -> None:
    with pytest.raises(ValueError, match=r"signing.method 'certificate' needs"):
        SigningSettings(method="certificate")
    with pytest.raises(ValueError, match=r"signing.method 'sigstore' needs signing.sigstore_identity"):
        SigningSettings(method="sigstore")
    keyless = open_signing(SigningSettings(method="sigstore", sigstore_identity="release@example.com"))
    assert keyless.method == "sigstore"

"""Signed artifacts: every committed folder is signed over each file's digest, and verified where it
crosses a boundary (deploy, cache reuse, checkpoint restore, promotion, ``lockgate verify``).

The signer is Sigstore's ``model-signing`` library behind the small ``ArtifactSigning`` port, picked
by ``signing.method``: an elliptic-curve key pair (the default, made by ``make setup`` outside the
checkout), a private key with a certificate chain, or Sigstore keyless. Its errors are translated
here (``ERROR_MAP``): a signature that does not match the files is a ``TamperedError``.

Layout: the signature of the folder ``<kind>/<address>`` is the file ``<kind>/<address>.sig`` beside
it (a Sigstore bundle, JSON). Nothing is ever written into a committed folder, so the folder's
digest (``digest_tree``) stays what the stage recorded and model loaders see only what was staged;
every file in the folder is covered, git files and symlinked files included. A folder without its
signature is refused like a changed one.

The private key is read only when signing and never logged; verification needs only the public key
(or the certificate chain, or the Sigstore identity).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from lockgate.digest import digest_file
from lockgate.errors import ConfigError, LockgateError, StageError, TransientError
from lockgate.settings import SigningSettings

log = logging.getLogger(__name__)

SIGNATURE_SUFFIX = ".sig"

Change = Literal["changed", "added", "missing"]
_CHANGE_WORDS: dict[str, str] = {
    "changed": "was changed since it was signed",
    "added": "was added after signing",
    "missing": "is missing (it was signed)",
}


@dataclass(frozen=True)
class FileChange:
    """One file that differs from what was signed."""

    file: str
    change: Change


class TamperedError(LockgateError):
    """An artifact is not what was signed: a file changed, added or missing, or the signature is
    missing or does not verify. Never retried; the boundary that found it refuses the artifact.

    Attributes:
        artifact: the artifact (``<kind>/<address>``, or its folder outside a store).
        file: the first file found wrong (relative to the artifact), or the signature file.
        changes: every file found wrong.
    """

    def __init__(self, artifact: str, file: str, reason: str, changes: tuple[FileChange, ...] = ()) -> None:
        self.artifact = artifact
        self.file = file
        self.changes = changes
        super().__init__(f"artifact {artifact} refused: {file} {reason}")


@dataclass(frozen=True)
class VerifiedArtifact:
    """What a verification checked: the artifact, how many files, and the signature's digest."""

    artifact: str
    folder: Path
    files: int
    signature_digest: str


class ArtifactSigning(Protocol):
    """Signs a folder into a signature file, and verifies a folder against one."""

    method: str

    def sign(self, folder: Path, signature: Path) -> None: ...

    def verify(self, folder: Path, signature: Path) -> None:
        """Raises ``ValueError`` (model-signing's verdict) or a mapped error when the folder is not what was signed."""
        ...


def signature_path(folder: Path) -> Path:
    """Where the signature of ``folder`` lives: ``<folder>.sig`` beside it."""
    folder = Path(folder)
    return folder.with_name(folder.name + SIGNATURE_SUFFIX)


def artifact_name(folder: Path) -> str:
    """How messages name an artifact: ``<kind>/<address>`` for a store folder (and any other folder)."""
    folder = Path(folder)
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else str(folder)


# ---------------------------------------------------------------------------------------------
# The model-signing adapter


@cache
def error_map() -> dict[type[BaseException], type[LockgateError]]:
    """What each vendor exception becomes, looked up along its MRO (most specific first).

    A function, not a module constant, so importing this module (every artifact store does) does not
    import Sigstore's client; a test checks that every vendor exception is mapped.
    """
    from cryptography.exceptions import (
        AlreadyFinalized,
        AlreadyUpdated,
        InternalError,
        InvalidKey,
        InvalidSignature,
        InvalidTag,
        NotYetFinalized,
        UnsupportedAlgorithm,
    )
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import NetworkError, TUFError, VerificationError

    return {
        InvalidSignature: TamperedError,  # the bundle was not signed by the trusted key
        VerificationError: TamperedError,  # Sigstore: certificate, identity or transparency log check failed
        NetworkError: TransientError,  # Sigstore: Fulcio, Rekor or the OIDC issuer did not answer
        TUFError: TransientError,  # Sigstore: its trust root could not be refreshed
        SigstoreError: ConfigError,  # Sigstore: anything else is its setup (identity, issuer, trust config)
        UnsupportedAlgorithm: ConfigError,  # a key of a kind model-signing cannot use
        InvalidKey: ConfigError,  # key material cryptography cannot load
        InvalidTag: TamperedError,  # an authenticated cipher's check failed
        AlreadyFinalized: StageError,  # cryptography misused inside model-signing: retrying repeats it
        NotYetFinalized: StageError,
        AlreadyUpdated: StageError,
        InternalError: StageError,  # the OpenSSL backend failed
        TypeError: ConfigError,  # cryptography: an encrypted key without its password, or the reverse
        FileNotFoundError: ConfigError,  # a key or certificate file the settings name is not there
        PermissionError: ConfigError,
        json.JSONDecodeError: TamperedError,  # a signature file that is not a bundle
        KeyError: TamperedError,  # a bundle without the parts a signature has
        ValueError: TamperedError,  # model-signing's own verdicts: "Signature mismatch", "Key mismatch"...
        OSError: TransientError,  # reading the folder failed
    }


def translate_signing_error(exc: BaseException, artifact: str, file: str) -> LockgateError | None:
    """The Lockgate error for a model-signing failure on ``artifact``; ``None`` if it is not one."""
    table = error_map()
    for cls in type(exc).__mro__:
        kind = table.get(cls)
        if kind is None:
            continue
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        if kind is TamperedError:
            return TamperedError(artifact, file, f"does not verify: {text}")
        return kind(f"signing {artifact}: {type(exc).__name__}: {text}")
    return None


def _hashing_config() -> Any:
    """Every file, git files included; symlinks hashed by what they point at."""
    from model_signing import hashing

    # model-signing's Config constructors are unannotated: mypy strict calls them untyped.
    config = hashing.Config()  # type: ignore[no-untyped-call]
    return config.set_ignored_paths(paths=[], ignore_git_paths=False).use_file_serialization(allow_symlinks=True)


class ModelSigning:
    """``model-signing`` configured from ``signing`` settings; nothing is read before it is needed."""

    def __init__(self, settings: SigningSettings, resolve: Callable[[str], Path] = Path) -> None:
        self.method: str = settings.method
        self._settings = settings
        self._resolve = resolve

    def _file(self, setting: str, path: Path) -> Path:
        resolved = self._resolve(str(path)) if not path.is_absolute() else path
        if not resolved.is_file():
            hint = " (run `make setup` to create the key pair)" if setting.endswith("_key") else ""
            raise ConfigError(f"signing.{setting}: no file at {resolved}{hint}")
        return resolved

    def sign(self, folder: Path, signature: Path) -> None:
        from model_signing import signing

        s = self._settings
        config = signing.Config().set_hashing_config(_hashing_config())  # type: ignore[no-untyped-call]
        if s.method == "key":
            password = s.private_key_password.get_secret_value() if s.private_key_password else None
            config.use_elliptic_key_signer(
                private_key=self._file("private_key", s.private_key_path()), password=password
            )
        elif s.method == "certificate":
            config.use_certificate_signer(
                private_key=self._file("private_key", s.private_key_path()),
                signing_certificate=self._file("certificate", Path(s.certificate)),
                certificate_chain=[self._file("certificate_chain", Path(c)) for c in s.certificate_chain],
            )
        else:
            config.use_sigstore_signer(use_ambient_credentials=True, use_staging=s.sigstore_staging)
        config.sign(folder, signature)

    def verify(self, folder: Path, signature: Path) -> None:
        from model_signing import verifying

        s = self._settings
        config = verifying.Config().set_hashing_config(_hashing_config())  # type: ignore[no-untyped-call]
        if s.method == "key":
            config.use_elliptic_key_verifier(public_key=self._file("public_key", s.public_key_path()))
        elif s.method == "certificate":
            config.use_certificate_verifier(
                certificate_chain=[self._file("certificate_chain", Path(c)) for c in s.certificate_chain]
            )
        else:
            config.use_sigstore_verifier(
                identity=s.sigstore_identity, oidc_issuer=s.sigstore_oidc_issuer, use_staging=s.sigstore_staging
            )
        config.verify(folder, signature)


def open_signing(settings: SigningSettings, resolve: Callable[[str], Path] = Path) -> ArtifactSigning:
    """The signer the settings ask for (``signing.method``); relative key paths go through ``resolve``."""
    return ModelSigning(settings, resolve)


# ---------------------------------------------------------------------------------------------
# Signing and verifying artifact folders


@contextmanager
def _translated(artifact: str, file: str) -> Iterator[None]:
    try:
        yield
    except LockgateError:
        raise
    except Exception as exc:
        mapped = translate_signing_error(exc, artifact, file)
        if mapped is None:
            raise
        raise mapped from exc


def sign_folder(signing: ArtifactSigning, folder: Path, signature: Path | None = None) -> Path:
    """Sign every file of ``folder``; the signature is written atomically (default ``<folder>.sig``).

    ``folder`` may be a staging folder about to be renamed: the signature names files relative to it.
    """
    target = signature or signature_path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    os.close(fd)
    try:
        with _translated(artifact_name(folder), target.name):
            signing.sign(folder, Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("signed %s (%s)", artifact_name(folder), signing.method)
    return target


def signed_files(signature: Path) -> dict[str, str]:
    """The files a signature covers and their hex digests, read from its in-toto statement.

    Used only to say which file differs once the library has refused a folder (the statement's
    own signature was checked by then); returns ``{}`` for a bundle it cannot read.
    """
    try:
        bundle = json.loads(signature.read_text(encoding="utf-8"))
        envelope = bundle.get("dsseEnvelope") or bundle.get("dsse_envelope") or {}
        statement = json.loads(base64.b64decode(envelope["payload"]))
        return {r["name"]: str(r["digest"]) for r in statement["predicate"]["resources"]}
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        return {}


def _files_of(folder: Path) -> dict[str, str]:
    if folder.is_file():  # a single-file artifact: model-signing names its one entry "."
        return {".": digest_file(folder).split(":", 1)[1]}
    return {
        p.relative_to(folder).as_posix(): digest_file(p).split(":", 1)[1]
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def folder_changes(folder: Path, signature: Path) -> tuple[FileChange, ...]:
    """Which files of ``folder`` differ from what ``signature`` covers: changed, added or missing."""
    signed = signed_files(signature)
    actual = _files_of(folder)
    changes = [FileChange(f, "changed") for f in sorted(signed.keys() & actual.keys()) if signed[f] != actual[f]]
    changes += [FileChange(f, "added") for f in sorted(actual.keys() - signed.keys())]
    changes += [FileChange(f, "missing") for f in sorted(signed.keys() - actual.keys())]
    return tuple(FileChange(folder.name, c.change) if c.file == "." else c for c in changes)


def tampered(artifact: str, changes: tuple[FileChange, ...]) -> TamperedError:
    """The error naming the first wrong file (and how many others there are)."""
    first = changes[0]
    more = f"; {len(changes) - 1} more: {', '.join(c.file for c in changes[1:4])}" if len(changes) > 1 else ""
    return TamperedError(artifact, first.file, _CHANGE_WORDS[first.change] + more, changes)


def verify_folder(
    signing: ArtifactSigning, folder: Path, artifact: str | None = None, signature: Path | None = None
) -> VerifiedArtifact:
    """Check ``folder`` (or a single-file artifact) against its signature (default ``<folder>.sig``).

    Raises:
        TamperedError: the folder or its signature is missing, a file was changed, added or removed,
            or the signature was not made by a trusted signer (the artifact and the file named).
        ConfigError: the public key (or chain, or identity) the settings name is unusable.
    """
    folder = Path(folder)
    name = artifact or artifact_name(folder)
    signature = signature or signature_path(folder)
    if not folder.exists():
        raise TamperedError(name, folder.name, f"is not there ({folder})")
    if not signature.is_file():
        raise TamperedError(
            name,
            signature.name,
            "(its signature) is missing: the artifact was never signed or the signature was removed "
            "(a home made before Lockgate signed its artifacts: start a fresh one, `make clean` or --home)",
        )
    try:
        with _translated(name, signature.name):
            signing.verify(folder, signature)
    except TamperedError as refused:
        changes = folder_changes(folder, signature)
        if changes:
            raise tampered(name, changes) from refused
        raise
    files = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 1
    return VerifiedArtifact(artifact=name, folder=folder, files=files, signature_digest=digest_file(signature))


def create_key_pair(folder: Path) -> tuple[Path, Path]:
    """Make an elliptic-curve (P-256) key pair in ``folder`` (``make setup``): ``private-key.pem``
    (0600, in a 0700 folder) and ``public-key.pem``. An existing pair is kept as it is.

    Returns:
        ``(private key, public key)``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    private, public = folder / "private-key.pem", folder / "public-key.pem"
    if private.is_file() and public.is_file():
        return private, public
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def artifact_root(path: Path) -> Path:
    """The signed folder ``path`` belongs to: itself or the nearest folder above it with a signature
    beside it (a registered model may be a sub-folder of its artifact, e.g. ``quantized/<address>/model``);
    without one, the nearest content address above it (whose signature is then reported missing)."""
    path = Path(path)
    candidates = [p for p in (path, *path.parents) if p.name]
    for folder in candidates:
        if signature_path(folder).is_file():
            return folder
    for folder in candidates:
        if len(folder.name) == 16 and all(c in "0123456789abcdef" for c in folder.name):
            return folder
    return path


def verify_artifact(signing: ArtifactSigning, path: Path) -> VerifiedArtifact:
    """Verify the signed artifact ``path`` is (or lies in); see ``verify_folder``."""
    return verify_folder(signing, artifact_root(path))


def record_paths(result: object) -> list[Path]:
    """The local paths a stage result points at: ``path`` and ``*_path`` fields of each record (a tuple
    or list of records too) that exist on this machine."""
    from pydantic import BaseModel

    records = result if isinstance(result, tuple | list) else (result,)
    found: list[Path] = []
    for record in records:
        if not isinstance(record, BaseModel):
            continue
        for name in type(record).model_fields:
            value = getattr(record, name)
            if not ((name == "path" or name.endswith("_path")) and isinstance(value, str) and value):
                continue
            if Path(value).exists() and Path(value) not in found:
                found.append(Path(value))
    return found


def verify_record(signing: ArtifactSigning, result: object) -> list[VerifiedArtifact]:
    """Verify every artifact a stage result (a record, or a tuple of them) points at, each once: what a
    cache hit hands the next stage must be what was signed when the stage committed it.

    Raises:
        TamperedError: one of them is not what was signed (artifact and file named).
    """
    verified: list[VerifiedArtifact] = []
    seen: set[Path] = set()
    for path in record_paths(result):
        root = artifact_root(path)
        if root in seen:
            continue
        seen.add(root)
        verified.append(verify_folder(signing, root))
    return verified

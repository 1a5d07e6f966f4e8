"""``lockgate verify [REF]``: check an artifact, or what an alias points at, against its signature."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.cli._common import add_command, settings_of

if TYPE_CHECKING:
    from lockgate.workspace import Workspace


def resolve_ref(ref: str, workspace: Workspace) -> tuple[str, list[Path], str | None]:
    """What ``REF`` names, the folders to check and the registered model's digest (None for an
    artifact or a folder): an alias's (or a registered digest's) model with the base model under an
    adapter, an artifact digest in the store, or a folder.

    Raises:
        DataError: ``REF`` is none of these (or the alias points nowhere).
    """
    from lockgate.digest import short
    from lockgate.errors import DataError
    from lockgate.registry import ALIASES
    from lockgate.serving.deploy import engine_specs, served_folders

    registry = workspace.registry
    if ref in ALIASES:
        version = registry.get(ref)
        if version is None:
            raise DataError(f"verify: alias {ref!r} points at no model yet (see `lockgate status`)")
    else:
        wanted = ref.split(":", 1)[-1].lower()
        versions = registry.snapshot().versions.values()
        version = next((v for v in versions if len(wanted) >= 8 and short(v.digest, 64).startswith(wanted)), None)
    if version is not None:
        located = version.model_copy(update={"path": workspace.artifacts.locate(version.path)})
        specs, _ = engine_specs([located])
        return f"{ref} (model {short(version.digest)})", served_folders(specs) or [Path(located.path)], version.digest
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path), [path.resolve()], None
    root = workspace.artifacts.root
    if len(wanted) >= 8 and all(c in "0123456789abcdef" for c in wanted):
        found = sorted(p for p in root.glob(f"*/{wanted[:16]}*") if p.is_dir())
        if len(found) == 1:
            return f"artifact {found[0].parent.name}/{found[0].name}", found, None
    raise DataError(
        f"verify: {ref!r} is not an alias ({', '.join(ALIASES)}), a registered model's digest, "
        f"an artifact digest under {root} or a folder"
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """check an artifact or an alias's model against its signature (default: production)

    REF is an alias (candidate, canary, production), a model or artifact digest (sha256:..., or
    its first 8+ hex digits) or a folder. Every file is checked against the signature made when the
    artifact was committed; for an adapter, its base model too; for a registered model, the gate
    decision its promotion recorded, which must be signed too and a pass for this model. Exit 0: all
    verified; 1: a file was changed, added or removed, a signature is missing or not trusted, or the
    recorded decision is not a pass for this model (named); 2: REF names nothing.
    """
    from lockgate.digest import short
    from lockgate.gates import read_decision
    from lockgate.registry import recorded_path
    from lockgate.signing import open_signing, verify_artifact
    from lockgate.workspace import Workspace

    settings = settings_of(args)
    workspace = Workspace.open(settings)
    what, folders, model = resolve_ref(args.ref, workspace)
    signing = open_signing(settings.signing, settings.resolve)
    print(f"verifying {what} ({settings.signing.method} signature)")
    for folder in folders:
        checked = verify_artifact(signing, folder)
        print(f"  ok  {checked.artifact}: {checked.files} files match, signature {checked.signature_digest}")
    if model is None:
        return 0
    recorded = recorded_path(workspace.registry.snapshot(), model, "decision")
    if recorded is None:
        print("  --  no gate decision recorded for this model (registered by hand, or before decisions were kept)")
        return 0
    folder = Path(workspace.artifacts.locate(recorded))
    checked = verify_artifact(signing, folder)
    decision = read_decision(folder, model)
    print(
        f"  ok  {checked.artifact}: the gate passed {short(model)} under policy {short(decision.policy_digest)}, "
        f"signature {checked.signature_digest}"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``verify`` to the ``lockgate`` command line."""
    verify = add_command(subparsers, "verify", cmd_verify)
    verify.add_argument("ref", nargs="?", default="production", help="alias, digest or folder (default: production)")

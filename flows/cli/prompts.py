"""``lockgate prompts``: the prompt files and the prompt registry from the command line.

A version is named by an alias (``production``, ``canary``, ``candidate``), by ``name@hex``
or a digest (or its first characters), or as ``file``: the prompt file as it is now.
"""

from __future__ import annotations

import argparse
import difflib
import json
from typing import TYPE_CHECKING, Any

from flows.cli._common import add_command, run_flow, settings_of

if TYPE_CHECKING:
    from lockgate.prompts import PromptSpec
    from lockgate.registry.prompts import PromptRegistry
    from lockgate.settings import LockgateSettings
    from lockgate.workspace import Workspace


def _context(args: argparse.Namespace) -> tuple[LockgateSettings, Workspace, PromptRegistry]:
    """The settings, their workspace, and the registry of ``--prompt`` (default: the profile's prompt)."""
    from lockgate.workspace import Workspace

    settings = settings_of(args)
    workspace = Workspace.open(settings)
    return settings, workspace, workspace.prompts(args.prompt or settings.prompts.name)


def _spec(settings: LockgateSettings, registry: PromptRegistry, ref: str) -> PromptSpec:
    from lockgate.prompts import find_prompt

    if ref == "file":
        return find_prompt(settings.prompts_path, registry.name)[0]
    return registry.spec(ref)


def cmd_list(args: argparse.Namespace) -> int:
    """every prompt file, its version, and what each alias points at"""
    from lockgate.digest import short
    from lockgate.errors import ConfigError
    from lockgate.prompts import load_prompt, prompt_files
    from lockgate.registry.prompts import PromptRegistry

    settings, workspace, _ = _context(args)
    rows: list[dict[str, Any]] = []
    for path in prompt_files(settings.prompts_path):
        # Reads only: the plain local registry, never its W&B mirror.
        registry = PromptRegistry(workspace.registry_root, path.stem)
        aliases = registry.snapshot().aliases
        try:
            spec = load_prompt(path)
            file_version, problem = spec.version, None
        except ConfigError as exc:
            file_version, problem = "invalid", str(exc)
        by_alias = {a: f"{path.stem}@{short(d)}" for a, d in sorted(aliases.items())}
        rows.append({"name": path.stem, "file": file_version, "aliases": by_alias, "traffic": registry.traffic()})
        if problem:
            rows[-1]["problem"] = problem
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        served = ", ".join(f"{a}={v}" for a, v in row["aliases"].items()) or "nothing registered"
        weight = f" (canary gets {row['traffic']['canary']:.0%})" if row["traffic"] else ""
        print(f"{row['name']}: file {row['file']}; {served}{weight}")
        if "problem" in row:
            print(f"  {row['problem']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """one version's template and variables"""
    settings, _, registry = _context(args)
    spec = _spec(settings, registry, args.ref)
    if args.json:
        print(json.dumps({"version": spec.version, "digest": spec.digest, **spec.model_dump(mode="json")}, indent=2))
        return 0
    print(f"{spec.version}  ({spec.digest})\n{spec.description}\nvariables: {', '.join(spec.variables)}\n")
    print(spec.template)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """unified diff of two versions' templates (default: production vs the file)"""
    settings, _, registry = _context(args)
    old, new = _spec(settings, registry, args.old), _spec(settings, registry, args.new)
    lines = difflib.unified_diff(
        old.template.splitlines(keepends=True),
        new.template.splitlines(keepends=True),
        fromfile=f"{args.old} ({old.version})",
        tofile=f"{args.new} ({new.version})",
    )
    text = "".join(lines)
    if old.variables != new.variables:
        text += f"variables: {list(old.variables)} -> {list(new.variables)}\n"
    print(text or f"no difference: both are {old.version}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """point an alias at a version by hand (the prompt-release flow promotes through the gate)"""
    from lockgate.digest import short

    settings, _, registry = _context(args)
    if args.ref == "file":
        registry.add(_spec(settings, registry, "file"))
        ref = _spec(settings, registry, "file").version
    else:
        ref = args.ref
    move = registry.point(args.to, ref, args.reason, weight=args.weight)
    weight = f" with {args.weight:.0%} of traffic" if args.to == "canary" else ""
    print(f"{registry.name} {move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}{weight}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """point an alias back where it was before its last move

    Rolling production back revokes the version it leaves (it is not promoted again by itself).
    """
    from lockgate.digest import short

    _, _, registry = _context(args)
    move = registry.rollback(args.alias, reason=args.reason)
    print(f"{registry.name} {move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """run the prompt-only release flow on the prompt file (exit 3 if the gate rejects it)

    Evaluate the prompt file's version with the production model against the production prompt,
    gate it with the release policy (prompts.release_mode) and promote it if it passes.
    """
    from flows.params import PromptReleaseParams
    from lockgate.prompts import find_prompt

    params = PromptReleaseParams(
        profile=args.profile, home=args.home, prompt=args.prompt, decision_mode=args.decision_mode
    )
    settings = params.settings()  # fail fast on bad settings, and on a bad prompt file, before Prefect starts
    find_prompt(settings.prompts_path, args.prompt or settings.prompts.name)
    with run_flow(settings.home_path, catch_rejected=True) as run:
        from flows.prompt_release import prompt_release, prompt_summary_markdown

        run.result = prompt_release(params)
    print("\n" + prompt_summary_markdown(run.result), flush=True)
    return run.exit_code


def register(subparsers: Any) -> None:
    """Add ``prompts list|show|diff|promote|release|rollback`` to the ``lockgate`` command line."""
    parser = subparsers.add_parser(
        "prompts",
        help="prompt files and their registry: list, show, diff, promote, rollback",
        description="Prompt versions by content digest, with aliases (candidate, canary, production), history "
        "and rollback. Name a version by alias, name@hex, digest, or 'file' (the prompt file as it is now). "
        "A bad prompt file is one line naming the file and every problem, exit 2.",
    )
    parser.add_argument("--prompt", default=None, help="prompt name (default: the profile's prompts.name)")
    sub = parser.add_subparsers(dest="prompts_command", required=True)
    version = "alias, name@hex, digest or 'file'"

    listing = add_command(sub, "list", cmd_list)
    listing.add_argument("--json", action="store_true", help="print one JSON list")

    show = add_command(sub, "show", cmd_show)
    show.add_argument("ref", nargs="?", default="production", help=version)
    show.add_argument("--json", action="store_true", help="print the prompt as JSON")

    diff = add_command(sub, "diff", cmd_diff)
    diff.add_argument("old", nargs="?", default="production", help=version)
    diff.add_argument("new", nargs="?", default="file", help=version)

    promote = add_command(sub, "promote", cmd_promote)
    promote.add_argument("ref", help=f"{version} (registers the file's version)")
    promote.add_argument("--to", default="production", choices=["candidate", "canary", "production"])
    promote.add_argument(
        "--weight",
        type=float,
        default=None,
        help="canary: share of requests, between 0 and 1 (the next deploy serves it beside production)",
    )
    promote.add_argument("--reason", default="manual promotion", help="recorded in the history")

    release = add_command(sub, "release", cmd_release)
    release.add_argument("--decision-mode", default=None, choices=["auto", "manual", "dry_run"])

    rollback = add_command(sub, "rollback", cmd_rollback)
    rollback.add_argument("--alias", default="production", choices=["candidate", "canary", "production"])
    rollback.add_argument("--reason", default="manual rollback", help="recorded in the history")

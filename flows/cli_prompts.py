"""``lockgate prompts``: the prompt files and the prompt registry from the command line.

A version is named by an alias (``production``, ``canary``, ``candidate``), by ``name@hex``
or a digest (or its first characters), or as ``file``: the prompt file as it is now.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any


def _context(args: argparse.Namespace) -> tuple[Any, Any]:
    from flows.params import StageParams
    from lockgate.registry.prompts import open_prompt_registry

    settings = StageParams(profile=args.profile, home=args.home).settings()
    name = args.prompt or settings.prompts.name
    return settings, open_prompt_registry(settings.registry, Path(settings.registry_dir), name)


def _spec(settings: Any, registry: Any, ref: str) -> Any:
    from lockgate.prompts import find_prompt

    if ref == "file":
        return find_prompt(settings.prompts_path, registry.name)[0]
    return registry.spec(ref)


def cmd_list(args: argparse.Namespace) -> int:
    from lockgate.digest import short
    from lockgate.errors import ConfigError
    from lockgate.prompts import load_prompt, prompt_files
    from lockgate.registry.prompts import PromptRegistry

    settings, _ = _context(args)
    rows = []
    for path in prompt_files(settings.prompts_path):
        registry = PromptRegistry(Path(settings.registry_dir), path.stem)
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
    settings, registry = _context(args)
    spec = _spec(settings, registry, args.ref)
    if args.json:
        print(json.dumps({"version": spec.version, "digest": spec.digest, **spec.model_dump(mode="json")}, indent=2))
        return 0
    print(f"{spec.version}  ({spec.digest})\n{spec.description}\nvariables: {', '.join(spec.variables)}\n")
    print(spec.template)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    settings, registry = _context(args)
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
    from lockgate.digest import short

    settings, registry = _context(args)
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
    from lockgate.digest import short

    _, registry = _context(args)
    move = registry.rollback(args.alias, reason=args.reason)
    print(f"{registry.name} {move.alias}: {short(move.previous or '-')} -> {short(move.current or '-')}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from flows.cli import EXIT_REJECTED, _prefect_defaults, _quiet_verdict_tracebacks
    from flows.params import PromptReleaseParams
    from lockgate.errors import GateRejected
    from lockgate.prompts import find_prompt

    params = PromptReleaseParams(
        profile=args.profile, home=args.home, prompt=args.prompt, decision_mode=args.decision_mode
    )
    settings = params.settings()  # fail fast on bad settings, and on a bad prompt file, before Prefect starts
    find_prompt(settings.prompts_path, args.prompt or settings.prompts.name)
    _prefect_defaults(settings.home_path)
    from flows.prompt_release import prompt_release, prompt_summary_markdown

    _quiet_verdict_tracebacks()
    try:
        summary = prompt_release(params)
    except GateRejected as rejected:
        print("\n" + prompt_summary_markdown(rejected.details), flush=True)  # type: ignore[arg-type]
        return EXIT_REJECTED
    print("\n" + prompt_summary_markdown(summary))
    return 0


def register(subparsers: Any) -> None:
    """Add ``prompts list|show|diff|promote|rollback`` to the ``lockgate`` command line."""
    parser = subparsers.add_parser(
        "prompts",
        help="prompt files and their registry: list, show, diff, promote, rollback",
        description="Prompt versions by content digest, with aliases (candidate, canary, production), history "
        "and rollback. Name a version by alias, name@hex, digest, or 'file' (the prompt file as it is now). "
        "A bad prompt file is one line naming the file and every problem, exit 2.",
    )
    parser.add_argument("--prompt", default=None, help="prompt name (default: the profile's prompts.name)")
    sub = parser.add_subparsers(dest="prompts_command", required=True)

    ls = sub.add_parser("list", help="every prompt file, its version, and what each alias points at")
    ls.add_argument("--json", action="store_true", help="print one JSON list")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="one version's template and variables")
    sh.add_argument("ref", nargs="?", default="production", help="alias, name@hex, digest or 'file'")
    sh.add_argument("--json", action="store_true", help="print the prompt as JSON")
    sh.set_defaults(func=cmd_show)

    di = sub.add_parser("diff", help="unified diff of two versions' templates (default: production vs the file)")
    di.add_argument("old", nargs="?", default="production", help="alias, name@hex, digest or 'file'")
    di.add_argument("new", nargs="?", default="file", help="alias, name@hex, digest or 'file'")
    di.set_defaults(func=cmd_diff)

    pr = sub.add_parser(
        "promote",
        help="point an alias at a version by hand (the prompt-release flow promotes through the gate)",
    )
    pr.add_argument("ref", help="alias, name@hex, digest or 'file' (registers the file's version)")
    pr.add_argument("--to", default="production", choices=["candidate", "canary", "production"])
    pr.add_argument(
        "--weight",
        type=float,
        default=None,
        help="canary: share of requests, between 0 and 1 (the next deploy serves it beside production)",
    )
    pr.add_argument("--reason", default="manual promotion", help="recorded in the history")
    pr.set_defaults(func=cmd_promote)

    rl = sub.add_parser(
        "release",
        help="run the prompt-only release flow on the prompt file (exit 3 if the gate rejects it)",
        description="Evaluate the prompt file's version with the production model against the production "
        "prompt, gate it with the release policy (prompts.release_mode) and promote it if it passes.",
    )
    rl.add_argument("--decision-mode", default=None, choices=["auto", "manual", "dry_run"])
    rl.set_defaults(func=cmd_release)

    rb = sub.add_parser(
        "rollback",
        help="point an alias back where it was before its last move",
        description="Rolling production back revokes the version it leaves (it is not promoted again by itself).",
    )
    rb.add_argument("--alias", default="production", choices=["candidate", "canary", "production"])
    rb.add_argument("--reason", default="manual rollback", help="recorded in the history")
    rb.set_defaults(func=cmd_rollback)

"""``lockgate serve``, ``serve-key`` and ``deploy``: the gateway, its API keys, and the deploy flow."""

from __future__ import annotations

import argparse
import os
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    from flows.params import StageParams

    return StageParams(profile=args.profile, home=args.home).settings()


def _prefect_emitter(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Send an event to the Prefect server PREFECT_API_URL names (nobody listens without one)."""
    if not os.environ.get("PREFECT_API_URL"):
        return
    from prefect.events import emit_event

    emit_event(event=event, resource=resource, payload=payload)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lockgate.serving import build_gateway

    settings = _settings(args)
    gateway = build_gateway(settings, _prefect_emitter)
    host = args.host or settings.serving.host
    port = args.port or settings.serving.port
    print(f"lockgate gateway on http://{host}:{port}/v1 ({len(gateway.keys)} API key(s))", flush=True)
    uvicorn.run(gateway.app, host=host, port=port, log_level="warning")
    return 0


def cmd_serve_key(args: argparse.Namespace) -> int:
    from lockgate.serving import add_key, paths

    settings = _settings(args)
    where = paths(settings)
    key = add_key(
        where.keys,
        args.name,
        args.tokens_per_minute or settings.serving.tokens_per_minute,
        args.requests_per_minute or settings.serving.requests_per_minute,
    )
    print(key)
    print(f"(shown once; only its SHA-256 is stored in {where.keys})", flush=True)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.cli import _prefect_defaults
    from flows.deploy import DeployParams
    from lockgate.errors import ConfigError

    try:
        params = DeployParams(profile=args.profile, home=args.home, canary_weight=args.canary_weight)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid arguments: {problems}") from None
    settings = params.settings()
    _prefect_defaults(settings.home_path)
    from flows.deploy import deploy

    result = deploy(params)
    print(f"deployed ({result['mode']}): variants {', '.join(result['variants'])}; manifest {result['manifest']}")
    return 0


def register(sub: Any) -> None:
    """Add ``serve``, ``serve-key`` and ``deploy`` to the CLI."""
    se = sub.add_parser(
        "serve",
        help="run the gateway (OpenAI-compatible API in front of the deployed vLLM engines)",
        description="Serve /v1/chat/completions, /v1/models, /v1/feedback, /healthz and /metrics for what the "
        "serving manifest names (written by `deploy`). Needs API keys (`serve-key`).",
    )
    se.add_argument("--host", default=None, help="default: serving.host")
    se.add_argument("--port", type=int, default=None, help="default: serving.port")
    se.set_defaults(func=cmd_serve)

    sk = sub.add_parser(
        "serve-key",
        help="create an API key for the gateway (printed once; stored hashed)",
        description="Create (or replace) NAME's API key with its budgets; the key is printed once.",
    )
    sk.add_argument("name", help="who the key is for (letters, digits, . _ -)")
    sk.add_argument("--tokens-per-minute", type=int, default=None, help="default: serving.tokens_per_minute")
    sk.add_argument("--requests-per-minute", type=int, default=None, help="default: serving.requests_per_minute")
    sk.set_defaults(func=cmd_serve_key)

    de = sub.add_parser(
        "deploy",
        help="serve the production model: start vLLM, smoke-test, switch the gateway's manifest",
        description="Run the deploy flow: the registry's production model is served by vLLM, first as a canary "
        "beside the model serving now (--canary-weight), and goes live only after its smoke test.",
    )
    de.add_argument("--canary-weight", type=float, default=None, help="0..0.5; default: serving.canary_weight")
    de.set_defaults(func=cmd_deploy)

"""``lockgate serve``, ``serve-key``, ``deploy`` and ``ask``: the gateway, its API keys, the deploy flow, and
one question through them all."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from flows.cli._common import add_command, run_flow, settings_of

if TYPE_CHECKING:
    from lockgate.settings import LockgateSettings


def _prefect_emitter(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Send an event to the Prefect server PREFECT_API_URL names (nobody listens without one)."""
    if not os.environ.get("PREFECT_API_URL"):
        return
    from prefect.events import emit_event

    emit_event(event=event, resource=resource, payload=payload)


def cmd_serve(args: argparse.Namespace) -> int:
    """run the gateway (OpenAI-compatible API in front of the deployed vLLM engines)

    Serve /v1/chat/completions, /v1/models, /v1/feedback, /healthz and /metrics for what the serving
    manifest names (written by `deploy`). Needs API keys (`serve-key`).
    """
    import uvicorn

    from lockgate.serving import build_gateway

    settings = settings_of(args)
    gateway = build_gateway(settings, _prefect_emitter)
    host = args.host or settings.serving.host
    port = args.port or settings.serving.port
    print(f"lockgate gateway on http://{host}:{port}/v1 ({len(gateway.keys)} API key(s))", flush=True)
    uvicorn.run(gateway.app, host=host, port=port, log_level="warning")
    return 0


def cmd_serve_key(args: argparse.Namespace) -> int:
    """create an API key for the gateway (printed once; stored hashed)

    Create (or replace) NAME's API key with its budgets; the key is printed once.
    """
    from lockgate.serving import add_key
    from lockgate.workspace import ServingPaths

    settings = settings_of(args)
    # Only the serving paths: a key needs no store opened (nor the folders they would create).
    where = ServingPaths(settings)
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
    """serve the production model: start vLLM, smoke-test, switch the gateway's manifest

    Run the deploy flow: the registry's production model is served by vLLM, first as a canary beside
    the model serving now (--canary-weight), and goes live only after its smoke test.
    """
    from flows.deploy import DeployParams

    params = DeployParams(profile=args.profile, home=args.home, canary_weight=args.canary_weight)
    settings = params.settings()
    with run_flow(settings.home_path, command="deploy"):
        from flows.deploy import deploy

        result = deploy(params)
    print(f"deployed ({result['mode']}): variants {', '.join(result['variants'])}; manifest {result['manifest']}")
    return 0


def _sample_question(settings: LockgateSettings) -> str:
    """The first question of the profile's data sources: the first record prep would keep, read with
    prep's own row schema (its ``instruction``: a QA/Alpaca instruction or a chat's last user turn)."""
    from lockgate.errors import DataError
    from lockgate.readers import read_source
    from lockgate.rows import RowError, parse_row, telling_shape

    data = settings.data
    for source in settings.sources:
        for record in read_source(source):
            if record.value is None:
                continue
            try:
                row = parse_row(record.value, telling_shape(record.value) or "qa", data.min_chars, data.max_chars)
            except RowError:
                continue
            return str(row["instruction"]).strip()
    raise DataError(f"no question found in data.sources {settings.sources}; pass one: ask 'QUESTION'")


def _gateway_thread(app: Any, start_port: int) -> tuple[Any, Any, str]:
    """The gateway served by uvicorn in a thread of this process on a free localhost port."""
    import threading
    import time

    import uvicorn

    from lockgate.errors import StageError
    from lockgate.serving.vllm import free_port

    port = free_port(start_port)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise StageError(f"the gateway did not start on port {port} (see the log)")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def cmd_ask(args: argparse.Namespace) -> int:
    """deploy the production model, start the gateway, ask it one question, stop what it started

    Run the deploy flow (everybody on the production model), start the gateway on a free localhost
    port, create the API key 'demo' (as serve-key does), ask one question (default: the first of the
    sample data), print the answer and the variant that served it, then stop the gateway and the
    vLLM engines this command started. Without the serving environment it says so and exits 0.
    `make demo` ends with it.
    """
    from pathlib import Path

    from flows.cli.console import Mode
    from flows.deploy import DeployParams
    from lockgate.errors import StageError

    params = DeployParams(profile=args.profile, home=args.home, canary_weight=0.0, drain_s=0.0)
    settings = params.settings()
    vllm_python = settings.serving_settings().vllm_python
    if settings.serving.engine == "local" and not Path(vllm_python).exists():
        print(
            f"serving skipped: the serving environment ({vllm_python}) is missing; "
            "`make setup` builds it (vLLM, about 3.4 GB)",
            flush=True,
        )
        return 0
    question = args.question or _sample_question(settings)
    mode: Mode = "quiet" if args.quiet else "normal"
    with run_flow(settings.home_path, mode, command="ask") as run:
        import httpx

        from flows.deploy import deploy
        from lockgate.serving import GATEWAY_MODEL, VARIANT_HEADER, add_key, build_gateway, load_manifest
        from lockgate.serving.vllm import EngineBook, stop_engine
        from lockgate.workspace import ServingPaths

        where = ServingPaths(settings)
        book = EngineBook(where.engines)
        before = {e.pid for e in book.read()}
        server: Any = None
        thread: Any = None
        try:
            deploy(params)
            manifest = load_manifest(where.manifest)
            key = add_key(where.keys, "demo", settings.serving.tokens_per_minute, settings.serving.requests_per_minute)
            server, thread, url = _gateway_thread(build_gateway(settings, _prefect_emitter).app, settings.serving.port)
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": GATEWAY_MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0},
                timeout=settings.serving.request_timeout_s,
            )
            if reply.status_code != 200:
                raise StageError(f"the gateway answered HTTP {reply.status_code}: {reply.text[:300]}")
        finally:
            if server is not None:
                server.should_exit = True
                thread.join(timeout=15)
            # Only what this command started: an engine that was serving before keeps serving.
            running = book.read()
            started = [e for e in running if e.pid not in before]
            for engine in started:
                stop_engine(engine.pid)
            book.write([e for e in running if e.pid in before])
    answer = reply.json()["choices"][0]["message"]["content"].strip()
    variant = next(v for v in manifest.variants if v.name == reply.headers.get(VARIANT_HEADER))
    print(f"\nAsked through the gateway ({url}/v1, a new key for 'demo'):")
    print(f"  Q: {question}")
    print(f"  A: {answer or '(an empty answer)'}")
    print(f"  served by: {variant.name} ({variant.served_model}, prompt {variant.prompt_version})")
    stopped = f"and {len(started)} vLLM engine(s) " if started else ""
    print(f"Stopped the gateway {stopped}this command started. Full log: `{run.log_path}`", flush=True)
    return 0


def register(subparsers: Any) -> None:
    """Add ``serve``, ``serve-key``, ``deploy`` and ``ask`` to the ``lockgate`` command line."""
    serve = add_command(subparsers, "serve", cmd_serve)
    serve.add_argument("--host", default=None, help="default: serving.host")
    serve.add_argument("--port", type=int, default=None, help="default: serving.port")

    key = add_command(subparsers, "serve-key", cmd_serve_key)
    key.add_argument("name", help="who the key is for (letters, digits, . _ -)")
    key.add_argument("--tokens-per-minute", type=int, default=None, help="default: serving.tokens_per_minute")
    key.add_argument("--requests-per-minute", type=int, default=None, help="default: serving.requests_per_minute")

    deploy = add_command(subparsers, "deploy", cmd_deploy)
    deploy.add_argument("--canary-weight", type=float, default=None, help="0..0.5; default: serving.canary_weight")

    ask = add_command(subparsers, "ask", cmd_ask)
    ask.add_argument("question", nargs="?", default=None, help="default: the first question of data.sources")
    ask.add_argument("--quiet", action="store_true", help="print only errors and the answer")

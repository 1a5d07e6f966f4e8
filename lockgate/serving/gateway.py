"""The gateway: an OpenAI-compatible front door to the vLLM engines the manifest names.

Per request: the API key (stored hashed) is checked, the key's request and token budgets
are consulted, a variant is chosen (sticky by user id or key), context is retrieved from
the variant's index, the variant's prompt version is rendered, and vLLM's completions API
answers. The answer, its variant and its token counts go to Prometheus and the query log;
canary outcomes feed the rollback policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lockgate.pii import KINDS, PiiRules, redact_text
from lockgate.serving.canary import CanaryMonitor, route
from lockgate.serving.keys import ApiKey, KeyStore
from lockgate.serving.manifest import ManifestWatcher, ServingManifest, Variant
from lockgate.serving.ratelimit import RateLimiter

log = logging.getLogger(__name__)

GATEWAY_MODEL = "lockgate"
VARIANT_HEADER = "x-lockgate-variant"
USER_HEADER = "x-user-id"
# What a call to an engine can raise: connection and protocol errors, and timeouts (aiohttp's own
# timeouts subclass TimeoutError).
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)
_HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
# Questions and comments are logged for drift monitoring, with anything that looks like personal
# data or a secret redacted (users paste keys and e-mail addresses into questions).
REDACT_ALL = PiiRules(policies=dict.fromkeys(KINDS, "redact"))


class Retriever(Protocol):
    """Context for a question from a variant's index."""

    def contexts(self, variant: Variant, question: str) -> list[str]: ...


# (prompt version, question, context) -> the text the model continues
PromptRenderer = Callable[[str, str, str], str]
# (manifest, reason) -> the manifest to serve instead (aliases moved, event sent)
RollbackHandler = Callable[[ServingManifest, str], ServingManifest]


@dataclass
class GatewayOptions:
    """How the gateway behaves; built from ``serving.*`` settings at the edge."""

    max_tokens: int = 64
    max_body_bytes: int = 65536
    request_timeout_s: float = 60.0
    query_log: Path | None = None
    feedback_log: Path | None = None


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lockgate_gateway_requests",
            "Chat requests by variant and outcome",
            ["variant", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lockgate_gateway_latency_seconds",
            "End-to-end latency of answered requests",
            ["variant", "model"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter(
            "lockgate_gateway_tokens", "Tokens served", ["variant", "model", "kind"], registry=self.registry
        )
        self.in_flight = Gauge("lockgate_gateway_in_flight", "Requests being answered now", registry=self.registry)
        self.rejected = Counter(
            "lockgate_gateway_rejected", "Requests refused before routing", ["reason"], registry=self.registry
        )
        self.rollbacks = Counter(
            "lockgate_gateway_canary_rollbacks", "Automatic canary rollbacks", registry=self.registry
        )
        self.feedback = Counter("lockgate_gateway_feedback", "Feedback by rating", ["rating"], registry=self.registry)


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in OpenAI's shape, so clients raise their usual exceptions."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status, headers=headers)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class _Chat:
    question: str
    stream: bool
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None


def parse_chat(body: Any, default_max_tokens: int) -> _Chat:
    """The parts of an OpenAI chat request the gateway uses; a clear 400 otherwise."""
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a 'role'")
    users = [m for m in messages if m["role"] == "user"]
    question = _text(users[-1].get("content")) if users else None
    if not question or not question.strip():
        raise _BadRequest("the last user message must have non-empty text 'content'")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _BadRequest("'max_tokens' must be a positive integer")
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p", 1.0)
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise _BadRequest(f"'{name}' must be a non-negative number")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadRequest("'stream' must be true or false")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _BadRequest("'stop' must be a string or a list of strings")
    return _Chat(question, stream, max_tokens, float(temperature), float(top_p), stop)


def _text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of parts (its text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
    return None


@dataclass
class _JsonlLog:
    """Append-only JSONL, one line per write, flushed (kept open: reopening per request costs)."""

    path: Path | None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _file: Any = None

    def write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Gateway:
    """The gateway's state and request handling; ``app`` is the ASGI application."""

    def __init__(
        self,
        manifests: ManifestWatcher,
        keys: KeyStore,
        retriever: Retriever,
        render: PromptRenderer,
        monitor: CanaryMonitor,
        on_rollback: RollbackHandler,
        options: GatewayOptions | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.manifests = manifests
        self.keys = keys
        self.retriever = retriever
        self.render = render
        self.monitor = monitor
        self.on_rollback = on_rollback
        self.options = options or GatewayOptions()
        self.limiter = limiter or RateLimiter()
        self.metrics = _Metrics()
        self.queries = _JsonlLog(self.options.query_log)
        self.feedback_log = _JsonlLog(self.options.feedback_log)
        self._rollback_lock = threading.Lock()
        self._client: aiohttp.ClientSession | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/feedback", self.feedback, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # aiohttp, not httpx, to the engines: httpx's connection pool bookkeeping cost about 1 ms
        # of CPU per forwarded request at concurrency 8 (profiled), a tenth of the gateway's budget.
        # request_timeout_s bounds connecting and each wait for data, not the whole answer: a long
        # stream that keeps sending is not cut off.
        wait = self.options.request_timeout_s
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=wait, sock_read=wait),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            raise_for_status=False,
        )
        try:
            yield
        finally:
            await self._client.close()
            self.queries.close()
            self.feedback_log.close()

    # ---- auth and budgets -------------------------------------------------------------

    def _authenticate(self, request: Request) -> ApiKey | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.keys.lookup(token.strip())

    def _refuse_unauthenticated(self) -> JSONResponse:
        self.metrics.rejected.labels("auth").inc()
        return _error(
            401,
            "missing or unknown API key (send 'Authorization: Bearer <key>')",
            "invalid_request_error",
            "invalid_api_key",
        )

    # ---- endpoints ----------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        if self._authenticate(request) is None:
            return self._refuse_unauthenticated()
        manifest = self.manifests.current()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": GATEWAY_MODEL,
                        "object": "model",
                        "created": 0,
                        "owned_by": "lockgate",
                        "variants": [v.name for v in manifest.variants],
                    }
                ],
            }
        )

    async def healthz(self, request: Request) -> Response:
        manifest = self.manifests.current()
        assert self._client is not None
        engines = {}
        for v in manifest.variants:
            try:
                async with self._client.get(f"{v.engine_url}/health", timeout=_HEALTH_TIMEOUT) as reply:
                    ok = reply.status == 200
            except UPSTREAM_ERRORS:
                ok = False
            engines[v.name] = ok
        healthy = engines.get("production", False)
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "manifest": manifest.digest, "engines": engines},
            200 if healthy else 503,
        )

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def feedback(self, request: Request) -> Response:
        key = self._authenticate(request)
        if key is None:
            return self._refuse_unauthenticated()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return _error(400, "feedback needs the completion's 'id'", "invalid_request_error")
        rating = body.get("rating")
        if rating not in (-1, 0, 1):
            return _error(400, "'rating' must be -1, 0 or 1", "invalid_request_error")
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > 2000:
            return _error(400, "'comment' must be text of at most 2000 characters", "invalid_request_error")
        self.metrics.feedback.labels(str(rating)).inc()
        self.feedback_log.write(
            {
                "at": time.time(),
                "id": body["id"],
                "rating": rating,
                "comment": redact_text(comment, REDACT_ALL),
                "client": key.name,
            }
        )
        return JSONResponse({"accepted": True})

    async def chat_completions(self, request: Request) -> Response:
        key = self._authenticate(request)
        if key is None:
            return self._refuse_unauthenticated()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.options.max_body_bytes:
            # Refused before reading: a client cannot make the gateway hold a huge body.
            self.metrics.rejected.labels("too_large").inc()
            return _error(
                413,
                f"request body is {declared} bytes; the limit is {self.options.max_body_bytes}",
                "invalid_request_error",
                "request_too_large",
            )
        raw = bytearray()
        async for part in request.stream():  # a body without a length is read only up to the limit
            raw += part
            if len(raw) > self.options.max_body_bytes:
                self.metrics.rejected.labels("too_large").inc()
                return _error(
                    413,
                    f"request body is over the limit of {self.options.max_body_bytes} bytes",
                    "invalid_request_error",
                    "request_too_large",
                )
        try:
            chat = parse_chat(json.loads(raw), self.options.max_tokens)
        except ValueError:
            self.metrics.rejected.labels("bad_request").inc()
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        except _BadRequest as bad:
            self.metrics.rejected.labels("bad_request").inc()
            return _error(bad.status, str(bad), "invalid_request_error", bad.code)
        admission = self.limiter.admit(key.name, key.tokens_per_minute, key.requests_per_minute)
        if not admission.allowed:
            self.metrics.rejected.labels("rate_limited").inc()
            return _error(
                429,
                f"rate limit reached ({admission.budget}); retry after {admission.retry_after_s}s",
                "rate_limit_error",
                "rate_limit_exceeded",
                {"Retry-After": str(admission.retry_after_s)},
            )
        manifest = self.manifests.current()
        if chat.max_tokens >= manifest.max_model_len:
            return _error(
                400,
                f"max_tokens {chat.max_tokens} does not fit the model's context of {manifest.max_model_len} tokens",
                "invalid_request_error",
                "context_length_exceeded",
            )
        variant = route(manifest, request.headers.get(USER_HEADER) or key.sha256)
        started = time.perf_counter()
        try:
            contexts = (
                await anyio.to_thread.run_sync(self.retriever.contexts, variant, chat.question)
                if variant.index_uri
                else []
            )
            prompt = self.render(variant.prompt_version, chat.question, "\n\n".join(contexts))
        except Exception as exc:
            # The variant's index or prompt is broken: its error, counted against it (a canary rolls back).
            log.warning("variant %s cannot prepare the prompt: %s: %s", variant.name, type(exc).__name__, exc)
            self._finished(manifest, variant, None, chat, started, {}, "error")
            return _error(
                503,
                f"variant {variant.name} cannot answer now (retrieval or prompt failed)",
                "api_error",
                headers={VARIANT_HEADER: variant.name},
            )
        payload = {
            "model": variant.served_model,
            "prompt": prompt,
            "max_tokens": chat.max_tokens,
            "temperature": chat.temperature,
            "top_p": chat.top_p,
            "stream": chat.stream,
        }
        if chat.stop:
            payload["stop"] = chat.stop
        if chat.stream:
            payload["stream_options"] = {"include_usage": True}
        self.metrics.in_flight.inc()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        headers: dict[str, str] = {VARIANT_HEADER: variant.name}
        # Each path below takes the request out of in_flight when it ends (a stream: when it is consumed).
        if chat.stream:
            return await self._stream(manifest, variant, key, chat, payload, started, request_id, headers)
        return await self._complete(manifest, variant, key, chat, payload, started, request_id, headers)

    # ---- upstream -----------------------------------------------------------------------

    async def _complete(
        self,
        manifest: ServingManifest,
        variant: Variant,
        key: ApiKey,
        chat: _Chat,
        payload: dict[str, Any],
        started: float,
        request_id: str,
        headers: dict[str, str],
    ) -> Response:
        assert self._client is not None
        try:
            try:
                async with self._client.post(f"{variant.engine_url}/v1/completions", json=payload) as upstream:
                    status, text = upstream.status, await upstream.text()
            except UPSTREAM_ERRORS as exc:
                return self._upstream_failed(manifest, variant, started, chat, exc, headers)
            if status != 200:
                return self._upstream_status(manifest, variant, started, chat, status, text, headers)
            body = json.loads(text)
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            self._finished(manifest, variant, key, chat, started, usage, "ok")
            return JSONResponse(
                {
                    "id": request_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": GATEWAY_MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": choice.get("text", "")},
                            "finish_reason": choice.get("finish_reason") or "stop",
                        }
                    ],
                    "usage": {k: int(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
                },
                headers=headers,
            )
        finally:
            self.metrics.in_flight.dec()

    async def _stream(
        self,
        manifest: ServingManifest,
        variant: Variant,
        key: ApiKey,
        chat: _Chat,
        payload: dict[str, Any],
        started: float,
        request_id: str,
        headers: dict[str, str],
    ) -> Response:
        assert self._client is not None
        try:
            upstream = await self._client.post(f"{variant.engine_url}/v1/completions", json=payload)
        except UPSTREAM_ERRORS as exc:
            self.metrics.in_flight.dec()
            return self._upstream_failed(manifest, variant, started, chat, exc, headers)
        if upstream.status != 200:
            try:
                text = await upstream.text(errors="replace")
            except UPSTREAM_ERRORS:
                text = ""
            finally:
                upstream.release()
            self.metrics.in_flight.dec()
            return self._upstream_status(manifest, variant, started, chat, upstream.status, text, headers)

        async def events() -> AsyncIterator[bytes]:
            usage: dict[str, Any] = {}
            status = "error"
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
                body = {
                    "id": request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": GATEWAY_MODEL,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(body)}\n\n".encode()

            try:
                yield chunk({"role": "assistant", "content": ""}, None)
                async for raw in upstream.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        yield chunk({"content": choice.get("text", "")}, choice.get("finish_reason"))
                final = {
                    "id": request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": GATEWAY_MODEL,
                    "choices": [],
                    "usage": {k: int(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
                }
                yield f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode()
                status = "ok"
            except (*UPSTREAM_ERRORS, ValueError) as exc:
                log.warning("stream from %s broke: %s", variant.served_model, exc)
            except (asyncio.CancelledError, GeneratorExit):
                status = "cancelled"  # the client went away: not the engine's fault
                raise
            finally:
                # A finished stream's connection is kept for the next request; a broken or abandoned
                # one is closed, which also tells vLLM to stop generating.
                if status == "ok":
                    upstream.release()
                else:
                    upstream.close()
                self.metrics.in_flight.dec()
                self._finished(
                    manifest, variant, key, chat, started, usage, status, count_for_canary=status != "cancelled"
                )

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _upstream_failed(
        self,
        manifest: ServingManifest,
        variant: Variant,
        started: float,
        chat: _Chat,
        exc: Exception,
        headers: dict[str, str],
    ) -> Response:
        self._finished(manifest, variant, None, chat, started, {}, "error")
        timeout = isinstance(exc, TimeoutError)
        return _error(
            504 if timeout else 502,
            f"the model engine for variant {variant.name} {'timed out' if timeout else 'is unreachable'}",
            "api_error",
            headers=headers,
        )

    def _upstream_status(
        self,
        manifest: ServingManifest,
        variant: Variant,
        started: float,
        chat: _Chat,
        status: int,
        text: str,
        headers: dict[str, str],
    ) -> Response:
        message = _upstream_message(text)
        if 400 <= status < 500:
            # The request's fault (most often: the prompt with its retrieved context is too long).
            self._finished(manifest, variant, None, chat, started, {}, "client_error", count_for_canary=False)
            if "context" in message.lower() or "too long" in message.lower() or "max_model_len" in message:
                return _error(
                    400,
                    f"prompt too long: the question with its retrieved context does not fit the "
                    f"model's context of {manifest.max_model_len} tokens (engine: {message})",
                    "invalid_request_error",
                    "context_length_exceeded",
                    headers,
                )
            return _error(
                400, f"the model engine refused the request: {message}", "invalid_request_error", headers=headers
            )
        self._finished(manifest, variant, None, chat, started, {}, "error")
        return _error(
            502, f"the model engine for variant {variant.name} failed (HTTP {status})", "api_error", headers=headers
        )

    # ---- bookkeeping --------------------------------------------------------------------

    def _finished(
        self,
        manifest: ServingManifest,
        variant: Variant,
        key: ApiKey | None,
        chat: _Chat,
        started: float,
        usage: dict[str, Any],
        status: str,
        count_for_canary: bool = True,
    ) -> None:
        latency = time.perf_counter() - started
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        labels = (variant.name, variant.served_model)
        self.metrics.requests.labels(*labels, status).inc()
        if status == "ok":
            self.metrics.latency.labels(*labels).observe(latency)
            self.metrics.tokens.labels(*labels, "prompt").inc(prompt_tokens)
            self.metrics.tokens.labels(*labels, "completion").inc(completion_tokens)
        if key is not None:
            self.limiter.charge(key.name, prompt_tokens + completion_tokens)
        self.queries.write(
            {
                "at": time.time(),
                "question": redact_text(chat.question, REDACT_ALL),
                "variant": variant.name,
                "model": variant.model_digest,
                "prompt_version": variant.prompt_version,
                "latency_ms": round(latency * 1000, 2),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "status": status,
                "stream": chat.stream,
            }
        )
        if count_for_canary:
            self.monitor.observe(variant.model_digest, status == "ok", latency * 1000)
            if variant.name == "canary":
                self._judge_canary(manifest, variant)

    def _judge_canary(self, manifest: ServingManifest, canary: Variant) -> None:
        reason = self.monitor.verdict(canary.model_digest)
        if reason is None:
            return
        with self._rollback_lock:
            live = self.manifests.current()
            if live.canary is None or live.canary.model_digest != canary.model_digest:
                return  # already rolled back (or replaced) by another request
            try:
                replacement = self.on_rollback(live, reason)
            except Exception:
                log.exception("canary rollback failed; taking the canary out of traffic anyway")
                replacement = live.without_canary(reason)
            self.manifests.replace(replacement)
            self.monitor.forget(canary.model_digest)
            self.metrics.rollbacks.inc()


def _upstream_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return " ".join(str(err["message"]).split())[:300]
        if isinstance(body.get("message"), str):
            return " ".join(body["message"].split())[:300]
    return " ".join(text.split())[:300]

"""The gateway: an OpenAI-compatible front door to the vLLM engines the manifest names.

Per request: the API key (stored hashed) is checked, the key's request and token budgets
are consulted, a variant is chosen (sticky by user id or key), context is retrieved from
the variant's index, the variant's prompt version is rendered, and vLLM's completions API
answers. The answer, its variant and its token counts go to Prometheus and the query log;
canary outcomes feed the rollback policy.

This module keeps the routes, auth, budgets and that bookkeeping. The request and response
shapes are in ``openai``, the client to the engines and its error table in ``upstream``, the
metrics in ``metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lockgate.chat import ChatFormat, chat_format_of, join_contexts
from lockgate.pii import REDACT_ALL, redact_text
from lockgate.serving.canary import CanaryMonitor, route
from lockgate.serving.keys import ApiKey, KeyStore
from lockgate.serving.manifest import DEPLOY_LOCK, ManifestWatcher, ServingManifest, Variant
from lockgate.serving.metrics import GatewayMetrics
from lockgate.serving.openai import (
    GATEWAY_MODEL,
    BadRequest,
    ChatRequest,
    EngineReplyError,
    chat_chunk,
    chat_completion,
    completion_events,
    completion_reply,
    completion_request,
    error_message,
    error_response,
    last_chunks,
    parse_chat,
    read_json,
)
from lockgate.serving.ratelimit import RateLimiter
from lockgate.serving.upstream import (
    NOT_A_COMPLETION,
    UPSTREAM_ERRORS,
    EngineClient,
    EngineFailure,
    EngineRefused,
    EngineStream,
    failure_for,
)

log = logging.getLogger(__name__)

VARIANT_HEADER = "x-lockgate-variant"
USER_HEADER = "x-user-id"
# How much of each answer the query log keeps (the online evaluation judges a sample of them).
ANSWER_LOG_CHARS = 4000
# Questions and comments are logged for drift monitoring, with anything that looks like personal
# data or a secret redacted (users paste keys and e-mail addresses into questions).
# What ends a stream early: the engine's failure, an event that is not a completions event
# (EngineReplyError), or a line longer than aiohttp's reader takes (ValueError).
_STREAM_BREAKS: tuple[type[BaseException], ...] = (*UPSTREAM_ERRORS, EngineReplyError, ValueError)


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


@dataclass
class _JsonlLog:
    """Append-only JSONL, one line per write, flushed (kept open: reopening per request costs)."""

    path: Path | None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _file: Any = None

    def write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            text = json.dumps(row, ensure_ascii=False)
            # Characters str.splitlines() breaks at (NEL, LINE/PARAGRAPH SEPARATOR) are escaped, so
            # every line-based reader sees one row per line; JSON escapes read back as the same text.
            text = text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
            line = (text + "\n").encode("utf-8")
        except UnicodeEncodeError:
            # Text that is not valid Unicode (a lone UTF-16 surrogate a client sent) cannot be UTF-8:
            # that row is written with JSON's escapes, which a reader turns back into the same text.
            line = (json.dumps(row, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _StreamAnswer(StreamingResponse):
    """A streamed answer that is booked however the response ends.

    Starlette stops iterating the relay when the client goes away; if that happens before the
    first chunk is asked for, the relay never starts and its ``finally`` never runs. So the
    response closes the relay itself and then calls ``end``, which books what the relay did not.
    """

    def __init__(self, relay: AsyncGenerator[bytes, None], end: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(relay, media_type="text/event-stream", headers=headers)
        self._relay = relay
        self._end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # runs even while the request is being cancelled
                await self._relay.aclose()  # a relay paused at a chunk runs its finally now, not when collected
            self._end()


@dataclass(frozen=True)
class _Call:
    """One chat request routed to a variant: what its answer and the bookkeeping at its end need."""

    manifest: ServingManifest
    variant: Variant
    key: ApiKey
    chat: ChatRequest
    started: float
    request_id: str
    headers: dict[str, str]


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
        self.metrics = GatewayMetrics()
        self.queries = _JsonlLog(self.options.query_log)
        self.feedback_log = _JsonlLog(self.options.feedback_log)
        self.engines = EngineClient(self.options.request_timeout_s)
        self._rollback_lock = threading.Lock()
        self._chat_formats: dict[str, ChatFormat] = {}  # model folder -> its chat template, read once
        self._rollback_deferred: str | None = None  # the canary whose rollback waits for a deploy
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
        await self.engines.start()
        try:
            yield
        finally:
            await self.engines.close()
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
        return error_response(
            401,
            "missing or unknown API key (send 'Authorization: Bearer <key>')",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _refuse_too_large(self, message: str) -> JSONResponse:
        self.metrics.rejected.labels("too_large").inc()
        return error_response(413, message, "invalid_request_error", "request_too_large")

    async def _read_body(self, request: Request) -> bytes | Response:
        """The request's body, or the 413 that refuses it: a body is never read past ``max_body_bytes``."""
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            # Refused before reading: a client cannot make the gateway hold a huge body.
            return self._refuse_too_large(f"request body is {declared} bytes; the limit is {limit}")
        raw = bytearray()
        async for part in request.stream():  # a body without a length is read only up to the limit
            raw += part
            if len(raw) > limit:
                return self._refuse_too_large(f"request body is over the limit of {limit} bytes")
        return bytes(raw)

    # ---- endpoints ----------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the one model clients see, with the variants behind it."""
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
        """``GET /healthz``: each engine's health; 503 unless production's engine is up."""
        manifest = self.manifests.current()
        engines = {v.name: await self.engines.healthy(v.engine_url) for v in manifest.variants}
        healthy = engines.get("production", False)
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "manifest": manifest.digest, "engines": engines},
            200 if healthy else 503,
        )

    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: the gateway's metrics for Prometheus."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/feedback``: a rating (and comment, redacted) of an answer, by its completion id."""
        key = self._authenticate(request)
        if key is None:
            return self._refuse_unauthenticated()
        raw = await self._read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = read_json(raw)
        except BadRequest as bad:
            return error_response(bad.status, str(bad), "invalid_request_error", bad.code)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return error_response(400, "feedback needs the completion's 'id'", "invalid_request_error")
        rating = body.get("rating")
        if isinstance(rating, bool) or rating not in (-1, 0, 1):
            return error_response(400, "'rating' must be -1, 0 or 1", "invalid_request_error")
        rating = int(rating)  # 1.0 is 1: one metric label per rating
        comment = body.get("comment", "")
        if not isinstance(comment, str) or len(comment) > 2000:
            return error_response(400, "'comment' must be text of at most 2000 characters", "invalid_request_error")
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

    def chat_format(self, variant: Variant) -> ChatFormat:
        """The served model's own chat template around the prompt, as training and evaluation used it."""
        fmt = self._chat_formats.get(variant.model_path)
        if fmt is None:
            fmt = self._chat_formats[variant.model_path] = chat_format_of(variant.model_path)
        return fmt

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``: a key's question answered by the variant it is routed to."""
        key = self._authenticate(request)
        if key is None:
            return self._refuse_unauthenticated()
        raw = await self._read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            chat = parse_chat(read_json(raw), self.options.max_tokens)
        except BadRequest as bad:
            self.metrics.rejected.labels("bad_request").inc()
            return error_response(bad.status, str(bad), "invalid_request_error", bad.code)
        admission = self.limiter.admit(key.name, key.tokens_per_minute, key.requests_per_minute)
        if not admission.allowed:
            self.metrics.rejected.labels("rate_limited").inc()
            return error_response(
                429,
                f"rate limit reached ({admission.budget}); retry after {admission.retry_after_s}s",
                "rate_limit_error",
                "rate_limit_exceeded",
                {"Retry-After": str(admission.retry_after_s)},
            )
        manifest = self.manifests.current()
        if chat.max_tokens >= manifest.max_model_len:
            return error_response(
                400,
                f"max_tokens {chat.max_tokens} does not fit the model's context of {manifest.max_model_len} tokens",
                "invalid_request_error",
                "context_length_exceeded",
            )
        variant = route(manifest, request.headers.get(USER_HEADER) or key.sha256)
        call = _Call(
            manifest=manifest,
            variant=variant,
            key=key,
            chat=chat,
            started=time.perf_counter(),
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            headers={VARIANT_HEADER: variant.name},
        )
        try:
            contexts = (
                await anyio.to_thread.run_sync(self.retriever.contexts, variant, chat.question)
                if variant.index_uri
                else []
            )
            prompt = self.chat_format(variant).wrap(
                self.render(variant.prompt_version, chat.question, join_contexts(contexts))
            )
        except Exception as exc:
            # The variant's index or prompt is broken: its error, counted against it (a canary rolls back).
            log.warning("variant %s cannot prepare the prompt: %s: %s", variant.name, type(exc).__name__, exc)
            self._finished(call, {}, "error", charge=False)
            return error_response(
                503,
                f"variant {variant.name} cannot answer now (retrieval or prompt failed)",
                "api_error",
                headers=call.headers,
            )
        payload = completion_request(chat, variant.served_model, prompt)
        self.metrics.in_flight.inc()
        # Each path below takes the request out of in_flight when it ends (a stream: when its response ends).
        if chat.stream:
            return await self._stream(call, payload)
        return await self._complete(call, payload)

    # ---- answers from the engine --------------------------------------------------------

    async def _complete(self, call: _Call, payload: dict[str, Any]) -> Response:
        try:
            try:
                text = await self.engines.complete(call.variant.engine_url, payload)
            except EngineRefused as refused:
                return self._engine_refused(call, refused)
            except UPSTREAM_ERRORS as exc:
                return self._engine_failed(call, failure_for(exc))
            try:
                choice, usage = completion_reply(text)
            except EngineReplyError as exc:
                log.warning("the engine of variant %s answered 200 without a completion: %s", call.variant.name, exc)
                return self._engine_failed(call, NOT_A_COMPLETION)
            self._finished(call, usage, "ok", charge=True, answer=choice.text)
            return JSONResponse(chat_completion(call.request_id, int(time.time()), choice, usage), headers=call.headers)
        finally:
            self.metrics.in_flight.dec()

    async def _stream(self, call: _Call, payload: dict[str, Any]) -> Response:
        try:
            stream = await self.engines.stream(call.variant.engine_url, payload)
        except EngineRefused as refused:
            self.metrics.in_flight.dec()
            return self._engine_refused(call, refused)
        except UPSTREAM_ERRORS as exc:
            self.metrics.in_flight.dec()
            return self._engine_failed(call, failure_for(exc))
        booked = False

        def end(usage: dict[str, int], status: str, answer: str = "") -> None:
            # Called by the relay when it ends and by the response when it ends: the first books it.
            nonlocal booked
            if booked:
                return
            booked = True
            stream.finish(complete=status == "ok")
            self.metrics.in_flight.dec()
            self._finished(call, usage, status, charge=True, count_for_canary=status != "cancelled", answer=answer)

        # The response books the stream as cancelled if the relay never started (the client left first).
        return _StreamAnswer(self._relay(call, stream, end), lambda: end({}, "cancelled"), call.headers)

    async def _relay(
        self, call: _Call, stream: EngineStream, end: Callable[[dict[str, int], str, str], None]
    ) -> AsyncGenerator[bytes, None]:
        """The engine's completion events as chat chunks, then ``end`` (however the stream ended)."""
        usage: dict[str, int] = {}
        status = "error"
        answer: list[str] = []  # what the client was sent, for the query log (its first ANSWER_LOG_CHARS)
        kept = 0
        created = int(time.time())
        try:
            yield chat_chunk(call.request_id, created, {"role": "assistant", "content": ""}, None)
            async with contextlib.aclosing(completion_events(stream.lines)) as events:
                async for event in events:
                    if event.usage:
                        usage = event.usage
                    for choice in event.choices:
                        if kept < ANSWER_LOG_CHARS:
                            answer.append(choice.text)
                            kept += len(choice.text)
                        yield chat_chunk(call.request_id, created, {"content": choice.text}, choice.finish_reason)
            yield last_chunks(call.request_id, created, usage)
            status = "ok"
        except _STREAM_BREAKS as exc:
            log.warning("stream from %s broke: %s", call.variant.served_model, exc)
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"  # the client went away: not the engine's fault
            raise
        finally:
            end(usage, status, "".join(answer))

    def _engine_failed(self, call: _Call, failure: EngineFailure) -> Response:
        self._finished(call, {}, "error", charge=False)
        return error_response(
            failure.status,
            f"the model engine for variant {call.variant.name} {failure.says}",
            "api_error",
            headers=call.headers,
        )

    def _engine_refused(self, call: _Call, refused: EngineRefused) -> Response:
        message = error_message(refused.text)
        if 400 <= refused.status < 500:
            # The request's fault (most often: the prompt with its retrieved context is too long).
            self._finished(call, {}, "client_error", charge=False, count_for_canary=False)
            if "context" in message.lower() or "too long" in message.lower() or "max_model_len" in message:
                return error_response(
                    400,
                    f"prompt too long: the question with its retrieved context does not fit the "
                    f"model's context of {call.manifest.max_model_len} tokens (engine: {message})",
                    "invalid_request_error",
                    "context_length_exceeded",
                    call.headers,
                )
            return error_response(
                400, f"the model engine refused the request: {message}", "invalid_request_error", headers=call.headers
            )
        self._finished(call, {}, "error", charge=False)
        return error_response(
            502,
            f"the model engine for variant {call.variant.name} failed (HTTP {refused.status})",
            "api_error",
            headers=call.headers,
        )

    # ---- bookkeeping --------------------------------------------------------------------

    def _finished(
        self,
        call: _Call,
        usage: dict[str, int],
        status: str,
        *,
        charge: bool,
        count_for_canary: bool = True,
        answer: str = "",
    ) -> None:
        """Count, log and charge a finished request; judge the canary by it.

        Args:
            charge: take its tokens from the key's budget (only answers the engine gave count).
            count_for_canary: count it for or against its model (not when the client caused it).
            answer: the text the client was sent (redacted and cut to ``ANSWER_LOG_CHARS`` in the
                query log, where the online evaluation's judge reads it).
        """
        variant, chat = call.variant, call.chat
        latency = time.perf_counter() - call.started
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        labels = (variant.name, variant.served_model)
        self.metrics.requests.labels(*labels, status).inc()
        if status == "ok":
            self.metrics.latency.labels(*labels).observe(latency)
            self.metrics.tokens.labels(*labels, "prompt").inc(prompt_tokens)
            self.metrics.tokens.labels(*labels, "completion").inc(completion_tokens)
        if charge:
            self.limiter.charge(call.key.name, prompt_tokens + completion_tokens)
        self.queries.write(
            {
                "at": time.time(),
                "id": call.request_id,  # what /v1/feedback names: ratings join their question
                "question": redact_text(chat.question, REDACT_ALL),
                "variant": variant.name,
                "model": variant.model_digest,
                "prompt_version": variant.prompt_version,
                "latency_ms": round(latency * 1000, 2),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "status": status,
                "stream": chat.stream,
                "answer": redact_text(answer[:ANSWER_LOG_CHARS], REDACT_ALL),
            }
        )
        if count_for_canary:
            self.monitor.observe(variant.model_digest, status == "ok", latency * 1000)
            if variant.name == "canary":
                self._judge_canary(variant)

    def _judge_canary(self, canary: Variant) -> None:
        """Roll the canary back if its verdict says so, as the manifest's other writer (see ``swap_manifest``).

        The rollback is decided and written under the deploy lock, on the manifest it judged. The
        lock is never waited for (it runs on the event loop, and a deploy holds the lock for
        minutes): while a deploy holds it, the canary keeps serving and the canary's next finished
        request tries again; a deploy that has replaced the manifest meanwhile is left serving, and
        its canary, if it has one, is judged afresh.
        """
        reason = self.monitor.verdict(canary.model_digest)
        if reason is None:
            return
        with self._rollback_lock:
            live = self.manifests.current()
            if live.canary is None or live.canary.model_digest != canary.model_digest:
                return  # already rolled back (or replaced) by another request

            def rolled_back(current: ServingManifest) -> ServingManifest:
                try:
                    return self.on_rollback(current, reason)
                except Exception:
                    log.exception("canary rollback failed; taking the canary out of traffic anyway")
                    return current.without_canary(reason)

            outcome = self.manifests.replace_if_current(live, rolled_back, f"canary rollback ({reason})")
            if outcome == "busy":
                if self._rollback_deferred != canary.model_digest:  # said once, not on every request
                    self._rollback_deferred = canary.model_digest
                    log.warning(
                        "canary %s is to be rolled back (%s) but a deploy holds %s; trying again on its next request",
                        canary.served_model,
                        reason,
                        self.manifests.lock_folder / DEPLOY_LOCK,
                    )
                return
            self._rollback_deferred = None
            if outcome == "swapped":
                self.monitor.forget(canary.model_digest)
                self.metrics.rollbacks.inc()

"""OpenAI's API shapes as the gateway speaks them.

Clients send chat requests and get chat completions (whole or as server-sent chunks); the engines
behind the gateway answer vLLM's completions API. This module reads and writes those shapes and
nothing else: no network, no state.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

# The one model id clients see; which engine answers is the gateway's choice.
GATEWAY_MODEL = "lockgate"
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
_SSE_DATA = "data: "


class BadRequest(Exception):
    """A chat request the gateway cannot answer; ``status`` and ``code`` go into the error body."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class EngineReplyError(ValueError):
    """The engine answered 200 with something that is not the completions API's shape: its failure, not the client's."""


@dataclass(frozen=True)
class CompletionChoice:
    """A completions choice as the gateway passes it on: its text and why it stopped (None: not yet)."""

    text: str
    finish_reason: str | None


@dataclass(frozen=True)
class CompletionEvent:
    """One event of a streamed completions answer: its choices, and its usage if it carries one."""

    choices: tuple[CompletionChoice, ...]
    usage: dict[str, int]


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat request the gateway uses."""

    question: str
    stream: bool
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None


def read_json(raw: bytes) -> Any:
    """A request body's JSON value.

    Raises:
        BadRequest: the body is not UTF-8 JSON, nests deeper than the parser can follow, or holds
            ``NaN``/``Infinity`` or a number too large for a float (not JSON numbers).
    """
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        # Python's parser recurses per level: a body nested a few thousand deep cannot be read.
        raise BadRequest("request body is not valid JSON: it nests too deeply") from None
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid JSON: it is not UTF-8 text") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def parse_chat(body: Any, default_max_tokens: int) -> ChatRequest:
    """The parts of an OpenAI chat request the gateway uses; a clear 400 otherwise.

    Raises:
        BadRequest: the body is not a chat request the gateway can answer.
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'")
    users = [m for m in messages if m["role"] == "user"]
    question = _text(users[-1].get("content")) if users else None
    if not question or not question.strip():
        raise BadRequest("the last user message must have non-empty text 'content'")
    if not _is_unicode(question):
        # Text the engine's tokenizer cannot take: refused here, so the engine never fails on it.
        raise BadRequest("the last user message's 'content' is not valid Unicode (it holds a lone UTF-16 surrogate)")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    temperature = _non_negative(body.get("temperature", 0.0), "temperature")
    top_p = _non_negative(body.get("top_p", 1.0), "top_p")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop' must be a string or a list of strings")
    if stop is not None and not all(_is_unicode(s) for s in stop):
        raise BadRequest("'stop' is not valid Unicode (it holds a lone UTF-16 surrogate)")
    return ChatRequest(question, stream, max_tokens, temperature, top_p, stop)


def _non_negative(value: Any, name: str) -> float:
    """A sampling parameter as a float; a BadRequest naming it unless it is a finite number >= 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        if math.isfinite(number) and number >= 0:
            return number
    raise BadRequest(f"'{name}' must be a non-negative number")


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: JSON's ``\\ud800`` escapes can make a lone surrogate, which is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of parts (its text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
    return None


def error_response(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in OpenAI's shape, so clients raise their usual exceptions."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status, headers=headers)


def error_message(text: str) -> str:
    """The message of an engine's error body (OpenAI's shape, or any text), on one line, at most 300 characters."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return " ".join(text.split())[:300]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return " ".join(str(err["message"]).split())[:300]
        if isinstance(body.get("message"), str):
            return " ".join(body["message"].split())[:300]
    return " ".join(text.split())[:300]


def completion_request(chat: ChatRequest, model: str, prompt: str) -> dict[str, Any]:
    """The completions API request that answers ``chat`` with ``model`` continuing ``prompt``."""
    payload: dict[str, Any] = {
        "model": model,
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
    return payload


def usage_counts(usage: Mapping[str, int]) -> dict[str, int]:
    """OpenAI's three token counts from an engine's usage (0 for any it left out)."""
    return {k: int(usage.get(k, 0)) for k in _USAGE_KEYS}


def completion_reply(text: str) -> tuple[CompletionChoice, dict[str, int]]:
    """The first choice and the usage of an engine's whole completions answer.

    Raises:
        EngineReplyError: the answer is not JSON, or has no choices, or they or its usage have another shape.
    """
    body = _engine_json(text)
    if not isinstance(body, dict):
        raise EngineReplyError("the answer is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise EngineReplyError("the answer has no 'choices'")
    return _choice(choices[0]), _usage(body.get("usage"))


def _engine_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise EngineReplyError("the answer nests too deeply to read") from None
    except ValueError as exc:
        raise EngineReplyError(f"the answer is not JSON ({exc})") from None


def _choice(value: Any) -> CompletionChoice:
    if not isinstance(value, dict):
        raise EngineReplyError("a choice is not a JSON object")
    text = value.get("text")
    finish = value.get("finish_reason")
    if not isinstance(text, str | None) or not isinstance(finish, str | None):
        raise EngineReplyError("a choice's 'text' or 'finish_reason' is not a string")
    return CompletionChoice(text or "", finish)


def _usage(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EngineReplyError("'usage' is not a JSON object")
    counts = {k: value[k] for k in _USAGE_KEYS if value.get(k) is not None}
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()):
        raise EngineReplyError("'usage' holds a token count that is not a non-negative integer")
    return counts


def chat_completion(
    request_id: str, created: int, choice: CompletionChoice, usage: Mapping[str, int]
) -> dict[str, Any]:
    """The chat completion for an engine's completions choice and usage."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": GATEWAY_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": choice.text},
                "finish_reason": choice.finish_reason or "stop",
            }
        ],
        "usage": usage_counts(usage),
    }


def chat_chunk(request_id: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    """One server-sent chat completion chunk carrying ``delta``."""
    body = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": GATEWAY_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def last_chunks(request_id: str, created: int, usage: Mapping[str, int]) -> bytes:
    """The chunk that ends a chat stream (no choices, the usage), then ``[DONE]``."""
    final = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": GATEWAY_MODEL,
        "choices": [],
        "usage": usage_counts(usage),
    }
    return f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode()


async def completion_events(lines: AsyncIterable[bytes]) -> AsyncGenerator[CompletionEvent, None]:
    """The events of a streamed completions answer, one per ``data:`` line, up to ``[DONE]``.

    Raises:
        EngineReplyError: an event is not JSON, or not an object, or its choices or usage have another shape.
    """
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.startswith(_SSE_DATA):
            continue
        data = line[len(_SSE_DATA) :].strip()
        if data == "[DONE]":
            break
        event = _engine_json(data)
        if not isinstance(event, dict):
            raise EngineReplyError("a stream event is not a JSON object")
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise EngineReplyError("a stream event's 'choices' is not a list")
        yield CompletionEvent(tuple(_choice(c) for c in choices), _usage(event.get("usage") or None))

"""OpenAI's API shapes as the gateway speaks them.

Clients send chat requests and get chat completions (whole or as server-sent chunks); the engines
behind the gateway answer vLLM's completions API. This module reads and writes those shapes and
nothing else: no network, no state.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat request the gateway uses."""

    question: str
    stream: bool
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None


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
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p", 1.0)
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"'{name}' must be a non-negative number")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop' must be a string or a list of strings")
    return ChatRequest(question, stream, max_tokens, float(temperature), float(top_p), stop)


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
    except ValueError:
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


def usage_counts(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI's three token counts from an engine's usage (0 for any it left out)."""
    return {k: int(usage.get(k, 0)) for k in _USAGE_KEYS}


def chat_completion(
    request_id: str, created: int, choice: Mapping[str, Any], usage: Mapping[str, Any]
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
                "message": {"role": "assistant", "content": choice.get("text", "")},
                "finish_reason": choice.get("finish_reason") or "stop",
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


def last_chunks(request_id: str, created: int, usage: Mapping[str, Any]) -> bytes:
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


async def completion_events(lines: AsyncIterable[bytes]) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a streamed completions answer, one per ``data:`` line, up to ``[DONE]``.

    Raises:
        ValueError: an event is not JSON.
    """
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.startswith(_SSE_DATA):
            continue
        data = line[len(_SSE_DATA) :].strip()
        if data == "[DONE]":
            break
        yield json.loads(data)

"""A scripted OpenAI-compatible judge for tests: a real HTTP server on 127.0.0.1 (fault injection).

It answers ``POST /v1/chat/completions`` in JSON mode by filling the JSON schema the Ragas prompt
asks for (every verdict 1, every statement supported), or, by ``mode``, answers too late
(``slow``) or with text that is not JSON (``garbage``). It counts requests and records the
``Authorization`` header it saw, so a test can check the key was sent and nowhere else.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCHEMA = re.compile(r"JSON Schema:\n(\{.*?\})Do not use", re.S)


def fill(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A value that satisfies a (Ragas-sized) JSON schema: every verdict 1, one item per list."""
    if "$ref" in schema:
        return fill(defs[schema["$ref"].split("/")[-1]], defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: fill(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill(schema.get("items", {"type": "string"}), defs)]
    if kind == "integer":
        return 0 if "noncommittal" in json.dumps(schema) else 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return "The answer is supported by the context."


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.delay_s = delay_s
        self.requests = 0
        self.authorization: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0  # the most requests it was answering at once
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.server.lock:
            self.server.requests += 1
            self.server.in_flight += 1
            self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
        self.server.authorization.add(self.headers.get("Authorization", ""))
        try:
            self._answer(body)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1

    def _answer(self, body: dict[str, Any]) -> None:
        if self.server.mode == "slow":
            time.sleep(self.server.delay_s)
        prompt = body["messages"][-1]["content"]
        if self.server.mode == "garbage":
            content = "Sure! I think it is mostly fine, roughly 7/10."
        else:
            match = _SCHEMA.search(prompt)
            schema = json.loads(match.group(1)) if match else {"type": "object"}
            content = json.dumps(fill(schema, schema.get("$defs", {})))
        reply = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "judge"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): fine
            pass


@contextmanager
def judge_server(mode: str = "ok", delay_s: float = 0.0) -> Iterator[JudgeServer]:
    """A judge on 127.0.0.1 for the duration of the block."""
    server = JudgeServer(mode, delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

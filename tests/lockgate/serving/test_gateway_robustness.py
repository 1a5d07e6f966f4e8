"""The gateway from outside: no request body can crash it or count against a variant.

Arbitrary JSON, JSON nested thousands deep, text with lone UTF-16 surrogates (as JSON escapes and
as raw bytes) and arbitrary bytes go to ``/v1/chat/completions`` and ``/v1/feedback`` of a real
gateway, in front of an OpenAI-compatible engine double on 127.0.0.1 that, like vLLM's tokenizer,
fails (500) on a prompt that is not valid Unicode. Every answer is 2xx or 4xx, no request is
counted as the variant's error, and a canary sent only malformed requests is not rolled back.
An engine that answers 200 with something that is not a completion, whole or streamed, is the
engine's error (502, or the stream ended); a client that leaves before the first chunk frees
the engine's connection and the in-flight gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lockgate.prompts import GROUNDED_QA
from lockgate.serving import (
    CanaryMonitor,
    Gateway,
    GatewayOptions,
    KeyStore,
    ManifestWatcher,
    RollbackPolicy,
    ServingManifest,
    Variant,
    add_key,
    write_manifest,
)
from lockgate.serving.retrieval import PromptBook

PROPS = settings(max_examples=200, deadline=None, database=None)
CANARY = "sha256:canary"
ENGINE_MODES = ("ok", "fail", "not_json", "no_choices", "choice_not_object", "usage_not_counts")
STREAM_MODES = ("ok", "event_not_object", "choices_not_objects", "slow")


# ---- an OpenAI-compatible engine double, served over real HTTP --------------------------------


class EngineDouble:
    """A completions endpoint whose answers a test sets (``mode``, ``stream_mode``).

    Like vLLM, it fails (500) on a prompt that is not valid Unicode: its tokenizer cannot take it.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.stream_mode = "ok"
        self.abandoned = threading.Event()  # a slow stream's connection was closed by the gateway

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/completions", self.completions, methods=["POST"])])

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        try:
            body["prompt"].encode("utf-8")
        except UnicodeEncodeError:
            return JSONResponse({"error": {"message": "cannot tokenize the prompt"}}, 500)
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "injected failure"}}, 500)
        if body.get("stream"):
            return StreamingResponse(self.events(request), media_type="text/event-stream")
        answer: Any = {
            "ok": {
                "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            },
            "not_json": "<html>upstream proxy error</html>",
            "no_choices": {"id": "cmpl-x", "object": "text_completion"},
            "choice_not_object": {"choices": ["ok"]},
            "usage_not_counts": {"choices": [{"text": " ok"}], "usage": {"prompt_tokens": "five"}},
        }[self.mode]
        if isinstance(answer, str):
            return Response(answer, 200, media_type="application/json")
        return JSONResponse(answer)

    async def events(self, request: Request) -> AsyncIterator[bytes]:
        first = {"choices": [{"index": 0, "text": " at", "finish_reason": None}]}
        yield f"data: {json.dumps(first)}\n\n".encode()
        if self.stream_mode == "slow":
            try:
                for _ in range(300):  # until the gateway hangs up, at most 30 s
                    if await request.is_disconnected():
                        break
                    await asyncio.sleep(0.1)
            finally:
                self.abandoned.set()
            return
        if self.stream_mode == "event_not_object":
            yield b"data: [1, 2]\n\n"
        elif self.stream_mode == "choices_not_objects":
            yield b'data: {"choices": ["dock"]}\n\n'
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()


class EngineServer:
    """An ASGI app served by uvicorn in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> EngineServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# ---- a gateway whose every request goes to the canary ----------------------------------------


@dataclass
class Served:
    gateway: Gateway
    client: TestClient
    key: str
    engine: EngineDouble
    rollbacks: list[str]
    query_log: Path | None
    feedback_log: Path

    def post(self, path: str, body: bytes) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return self.client.post(path, content=body, headers=headers)

    def sample(self, name: str, **labels: str) -> float:
        return self.gateway.metrics.registry.get_sample_value(name, labels) or 0.0

    def canary_errors(self) -> float:
        return self.sample("lockgate_gateway_requests_total", variant="canary", model="tiny", status="error")

    def canary_counted(self) -> int:
        """Requests the canary judge has seen (ok or not)."""
        return self.gateway.monitor.health(CANARY).requests

    def still_canary(self) -> bool:
        return self.rollbacks == [] and self.gateway.manifests.current().canary is not None


def variant(name: str, digest: str, weight: float, engine_url: str) -> Variant:
    return Variant(
        name=name,  # type: ignore[arg-type]
        model_digest=digest,
        served_model="tiny",
        engine_url=engine_url,
        model_path="tiny",
        prompt_version=GROUNDED_QA.version,
        weight=weight,
    )


@contextlib.contextmanager
def serve(tmp: Path, *, query_log: bool = True) -> Iterator[Served]:
    """An engine double and a gateway whose every request goes to the canary, which any counted
    error rolls back (3 requests, error rate over 20%)."""
    engine = EngineDouble()
    with EngineServer(engine.app()) as server:
        manifest = tmp / "manifest.json"
        write_manifest(
            manifest,
            ServingManifest(
                variants=(
                    variant("production", "sha256:prod", 0.0, server.url),
                    variant("canary", CANARY, 1.0, server.url),
                ),
                max_model_len=256,
            ),
        )
        key = add_key(tmp / "keys.json", "alice", 10**9, 10**6)
        rollbacks: list[str] = []

        def roll_back(live: ServingManifest, reason: str) -> ServingManifest:
            rollbacks.append(reason)
            return live.without_canary(reason)

        queries = tmp / "queries.jsonl" if query_log else None
        gateway = Gateway(
            manifests=ManifestWatcher(manifest, interval_s=0.0),
            keys=KeyStore.load(tmp / "keys.json"),
            retriever=NoRetrieval(),
            render=PromptBook().render,
            monitor=CanaryMonitor(RollbackPolicy(window_s=600, min_requests=3, max_error_rate=0.2, max_p95_ms=60_000)),
            on_rollback=roll_back,
            options=GatewayOptions(max_tokens=8, query_log=queries, feedback_log=tmp / "feedback.jsonl"),
        )
        with TestClient(gateway.app) as client:
            yield Served(gateway, client, key, engine, rollbacks, queries, tmp / "feedback.jsonl")


class NoRetrieval:
    """The variants have no index: nothing is retrieved."""

    def contexts(self, variant: Variant, question: str) -> list[str]:
        raise AssertionError("no index: nothing to retrieve")


def jsonl_rows(path: Path | None) -> list[dict[str, Any]]:
    """Every row of a JSONL log; fails unless each line is JSON (the log stays readable)."""
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("gateway")) as s:
        yield s


# ---- what clients may send -------------------------------------------------------------------

# Any code point; hypothesis draws surrogates only with exclude_categories given, and rarely, so TEXT adds them.
CHAR = st.characters(exclude_categories=())
SURROGATE = st.characters(categories=["Cs"])
# Text of any code points, half of it with a lone surrogate somewhere in it.
TEXT = st.text(CHAR, max_size=12) | st.builds(
    lambda head, lone, tail: head + lone + tail, st.text(CHAR, max_size=6), SURROGATE, st.text(CHAR, max_size=6)
)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, 0, 1, -1])
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN/Infinity, which is not JSON
    | TEXT
)
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
QUESTION = TEXT.filter(str.strip) | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), min_size=1, max_size=2
)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]), "content": QUESTION}),
    max_size=2,
).flatmap(lambda before: st.builds(lambda q: [*before, {"role": "user", "content": q}], QUESTION))
# A chat request as a client would send it (text aside, which may hold lone surrogates).
CHAT = st.fixed_dictionaries(
    {"model": st.just("lockgate"), "messages": MESSAGES},
    optional={
        "max_tokens": st.integers(1, 300),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stream": st.booleans(),
        "stop": TEXT | st.lists(TEXT, max_size=2),
    },
)
# What may stand in for one of its fields: anything, and near misses.
MESSAGE_ANY = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system"]) | JSON},
    optional={"content": TEXT | JSON | st.lists(st.fixed_dictionaries({"type": JSON, "text": TEXT | JSON}))},
)
FIELDS = {
    "messages": st.lists(MESSAGE_ANY | JSON, max_size=3) | JSON,
    "max_tokens": st.integers(-2, 300) | JSON,
    "max_completion_tokens": st.integers(-2, 300) | JSON,
    "temperature": st.floats() | JSON,
    "top_p": st.floats() | JSON,
    "stream": JSON,
    "stop": st.lists(TEXT | JSON, max_size=3) | JSON,
}


@st.composite
def near_chat(draw: st.DrawFn) -> Any:
    """A chat request with one to three fields replaced by something else."""
    chat = dict(draw(CHAT))
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True)):
        chat[name] = draw(FIELDS[name])
    return chat


FEEDBACK = st.fixed_dictionaries(
    {"id": TEXT | JSON},
    optional={"rating": st.sampled_from([-1, 0, 1, 1.0, True, 2]) | JSON, "comment": TEXT | JSON},
)


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a body: surrogates as ``\\ud800`` escapes, or as raw (not UTF-8) bytes."""
    text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


def nested(depth: int, opener: str) -> str:
    return opener * depth + "1" + {"[": "]", '{"a":': "}"}[opener] * depth


# JSON nested up to 5000 deep (Python's parser gives up near 1000), at the top or where text goes.
DEEP = st.builds(nested, st.integers(1, 5000), st.sampled_from(["[", '{"a":']))
WHERE = st.sampled_from(
    [
        "{}",
        '{{"messages": {}}}',
        '{{"messages": [{{"role": "user", "content": {}}}]}}',
        '{{"messages": [{{"role": "user", "content": "q"}}], "stop": {}}}',
        '{{"id": {}, "rating": 1}}',
        '{{"id": "x", "rating": 1, "comment": {}}}',
    ]
)
DEEP_BODY = st.builds(lambda where, deep: where.format(deep).encode(), WHERE, DEEP)
# Bytes of any kind, alone or as the text of a message or a comment.
RAW_BODY = st.binary(max_size=64) | st.builds(
    lambda raw, head: head + raw + b'"}]}' if b"messages" in head else head + raw + b'"}',
    st.binary(max_size=32),
    st.sampled_from([b'{"messages": [{"role": "user", "content": "', b'{"id": "x", "rating": 0, "comment": "']),
)


def answered_without_blame(served: Served, path: str, bodies: st.SearchStrategy[bytes]) -> None:
    """Send every body: each answer is 2xx or 4xx, and only answered chats reach the canary's count."""
    errors, counted = served.canary_errors(), served.canary_counted()

    @PROPS
    @given(body=bodies)
    def one(body: bytes) -> None:
        nonlocal counted
        r = served.post(path, body)
        assert 200 <= r.status_code < 500, (r.status_code, r.text[:300])
        if path == "/v1/chat/completions" and r.status_code == 200:
            counted += 1
        assert served.canary_errors() == errors
        assert served.canary_counted() == counted  # a client's bad input is not a request of the variant's

    one()
    assert served.still_canary()
    jsonl_rows(served.query_log)
    jsonl_rows(served.feedback_log)


# ---- properties ------------------------------------------------------------------------------


def test_any_json_to_chat_completions_is_answered_2xx_or_4xx(served: Served) -> None:
    answered_without_blame(served, "/v1/chat/completions", encoded(CHAT | near_chat() | JSON))


def test_deep_or_raw_bodies_to_chat_completions_are_answered_2xx_or_4xx(served: Served) -> None:
    answered_without_blame(served, "/v1/chat/completions", DEEP_BODY | RAW_BODY)


def test_any_body_to_feedback_is_answered_2xx_or_4xx(served: Served) -> None:
    answered_without_blame(served, "/v1/feedback", encoded(st.one_of(FEEDBACK, FEEDBACK, JSON)) | DEEP_BODY | RAW_BODY)


# ---- examples --------------------------------------------------------------------------------

SURROGATE_ESCAPED = b'{"messages": [{"role": "user", "content": "why \\ud800?"}]}'
SURROGATE_RAW = '{"messages": [{"role": "user", "content": "why \ud800?"}]}'.encode("utf-8", "surrogatepass")
MALFORMED = [
    SURROGATE_ESCAPED,
    SURROGATE_RAW,
    b'{"messages": [{"role": "user", "content": "q"}], "stream": true, "stop": ["\\udfff"]}',
    nested(3000, "[").encode(),
    ('{"messages": [{"role": "user", "content": ' + nested(3000, '{"a":') + "}]}").encode(),
    b'{"messages": [{"role": "user", "content": "q"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "q"}], "temperature": 1e400}',
    b'{"messages": [{"role": "user", "content": "q"}], "top_p": ' + str(10**400).encode() + b"}",
    b'{"messages": [{"role": "user", "content": "q"}], "max_tokens": 100000}',
    b"\xff\xfe{",
]


def test_a_lone_surrogate_is_a_400_naming_it_and_the_feedback_log_keeps_it(tmp_path: Path) -> None:
    with serve(tmp_path) as s:
        for body in (SURROGATE_ESCAPED, SURROGATE_RAW):
            r = s.post("/v1/chat/completions", body)
            assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json()["error"]["message"]
        deep = s.post("/v1/chat/completions", nested(3000, "[").encode())
        assert deep.status_code == 400 and "nests too deeply" in deep.json()["error"]["message"]
        comment = b'{"id": "chatcmpl-1", "rating": 1, "comment": "caf\\u00e9 \\ud800"}'
        assert s.post("/v1/feedback", comment).status_code == 200
        assert s.canary_errors() == 0
    assert [row["comment"] for row in jsonl_rows(s.feedback_log)] == ["café \ud800"]


def test_a_canary_sent_only_malformed_requests_is_not_rolled_back(tmp_path: Path) -> None:
    # No query log: a failed log write must not be what keeps the canary judge from counting.
    with serve(tmp_path, query_log=False) as s:
        for _ in range(5):
            for body in MALFORMED:
                r = s.post("/v1/chat/completions", body)
                assert 400 <= r.status_code < 500, (body[:80], r.status_code, r.text[:200])
        assert s.still_canary() and s.canary_counted() == 0 and s.canary_errors() == 0
        # The judge is live: answered requests are counted, and the engine's own errors roll the canary back.
        for _ in range(3):
            assert s.post("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "q"}]}').is_success
        assert s.canary_counted() == 3 and s.still_canary()
        s.engine.mode = "fail"
        for _ in range(3):
            s.post("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "q"}]}')
        assert len(s.rollbacks) == 1 and s.gateway.manifests.current().canary is None


ASK = b'{"messages": [{"role": "user", "content": "Where?"}]}'
ASK_STREAM = b'{"messages": [{"role": "user", "content": "Where?"}], "stream": true}'


@pytest.mark.parametrize("mode", [m for m in ENGINE_MODES if m not in ("ok", "fail")])
def test_a_200_that_is_not_a_completion_is_a_502_counted_against_the_variant(mode: str, tmp_path: Path) -> None:
    with serve(tmp_path) as s:
        s.engine.mode = mode
        r = s.post("/v1/chat/completions", ASK)
        assert r.status_code == 502, r.text
        assert "canary answered with something that is not a completion" in r.json()["error"]["message"]
        assert r.headers["x-lockgate-variant"] == "canary"
        assert s.canary_errors() == 1 and s.gateway.monitor.health(CANARY).errors == 1
    assert [row["status"] for row in jsonl_rows(s.query_log)] == ["error"]


@pytest.mark.parametrize("mode", ["event_not_object", "choices_not_objects"])
def test_a_stream_event_that_is_not_a_completions_event_ends_the_stream_as_the_engines_error(
    mode: str, tmp_path: Path
) -> None:
    with serve(tmp_path) as s:
        s.engine.stream_mode = mode
        r = s.post("/v1/chat/completions", ASK_STREAM)
        assert r.status_code == 200  # the headers were out before the bad event came
        assert " at" in r.text and "[DONE]" not in r.text
        assert s.canary_errors() == 1 and s.gateway.monitor.health(CANARY).errors == 1
        assert s.sample("lockgate_gateway_in_flight") == 0
        s.engine.stream_mode = "ok"  # and the next stream is answered whole
        assert s.post("/v1/chat/completions", ASK_STREAM).text.rstrip().endswith("data: [DONE]")
    assert [row["status"] for row in jsonl_rows(s.query_log)] == ["error", "ok"]


def test_a_client_that_leaves_before_the_first_chunk_frees_the_engine_and_the_gauge(tmp_path: Path) -> None:
    with serve(tmp_path) as s:
        s.engine.stream_mode = "slow"
        s.client.portal.call(leave_before_the_first_chunk, s)
        assert s.engine.abandoned.wait(10), "the engine's connection was not closed"
        assert s.sample("lockgate_gateway_in_flight") == 0
        assert s.canary_counted() == 0  # the client left: not the engine's fault
    assert [row["status"] for row in jsonl_rows(s.query_log)] == ["cancelled"]


async def leave_before_the_first_chunk(s: Served) -> None:
    """Ask for a stream as an ASGI server would, with a client that is gone once its request is in."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": ASK_STREAM, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)  # the response never gets as far as asking the relay for a chunk

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {s.key}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await s.gateway.app(scope, receive, send)


def test_a_question_with_line_separators_stays_one_row_of_the_query_log(tmp_path: Path) -> None:
    # Found by the properties above: NEL and LINE/PARAGRAPH SEPARATOR written raw split a row in two
    # for str.splitlines() readers; they are written as JSON escapes and read back as the same text.
    question = "one\x85two\u2028three\u2029four\x1cfive"
    body = json.dumps({"messages": [{"role": "user", "content": question}]}).encode()
    with serve(tmp_path) as s:
        r = s.post("/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        (row,) = jsonl_rows(s.query_log)
    assert row["question"] == question

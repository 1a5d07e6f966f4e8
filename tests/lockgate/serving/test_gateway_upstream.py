"""How the gateway meets its engines' failures, over real HTTP on localhost: an engine that is
not there (502), one slower than the request timeout (504), a stream passed on chunk by chunk,
a stream the engine cuts off (the client's stream ends, the query log says error), and the answers
the query log keeps (redacted, cut) for the online evaluation's judge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

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
from lockgate.serving.vllm import free_port
from tests.lockgate.serving.conftest import FaultyEngine, ServerThread


class NoRetrieval:
    """The variants here have no index; the gateway must not ask for contexts."""

    def contexts(self, variant: Variant, question: str) -> list[str]:
        raise AssertionError("no index: nothing to retrieve")


def streaming_engine(cut_after: int | None, pause_s: float = 0.01) -> Starlette:
    """A completions endpoint that streams three text chunks ``pause_s`` apart and usage, or drops
    the connection after ``cut_after`` chunks."""

    async def completions(request: Request) -> Response:
        body = await request.json()
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

        async def lines() -> AsyncIterator[bytes]:
            for i, text in enumerate([" at", " dock", " nine"]):
                if cut_after is not None and i == cut_after:
                    raise RuntimeError("engine died mid-stream")
                event = {"choices": [{"index": 0, "text": text, "finish_reason": "length" if i == 2 else None}]}
                yield f"data: {json.dumps(event)}\n\n".encode()
                await asyncio.sleep(pause_s)
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(lines(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def gateway_before(engine_url: str, tmp: Path, timeout_s: float = 60.0) -> tuple[ServerThread, str, Path]:
    manifest = tmp / "manifest.json"
    write_manifest(
        manifest,
        ServingManifest(
            variants=(
                Variant(
                    name="production",
                    model_digest="sha256:prod",
                    served_model="tiny",
                    engine_url=engine_url,
                    model_path="tiny",
                    prompt_version=GROUNDED_QA.version,
                    weight=1.0,
                ),
            ),
            max_model_len=256,
        ),
    )
    key = add_key(tmp / "keys.json", "alice", 1_000_000, 100_000)
    gateway = Gateway(
        manifests=ManifestWatcher(manifest, interval_s=0.0),
        keys=KeyStore.load(tmp / "keys.json"),
        retriever=NoRetrieval(),
        render=PromptBook().render,
        monitor=CanaryMonitor(RollbackPolicy(60, 10, 0.2, 10_000)),
        on_rollback=lambda m, reason: None,
        options=GatewayOptions(max_tokens=8, request_timeout_s=timeout_s, query_log=tmp / "queries.jsonl"),
    )
    return ServerThread(gateway.app), key, tmp / "queries.jsonl"


def ask(url: str, key: str, **extra: Any) -> httpx.Response:
    body = {"model": "lockgate", "messages": [{"role": "user", "content": "Where?"}], "max_tokens": 8, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def statuses(query_log: Path) -> list[str]:
    return [json.loads(line)["status"] for line in query_log.read_text().splitlines()]


@pytest.fixture
def engine_server(request: pytest.FixtureRequest) -> Iterator[str]:
    with ServerThread(request.param) as server:
        yield server.url


def test_an_engine_that_is_not_there_is_a_502_naming_the_variant(tmp_path: Path) -> None:
    server, key, log = gateway_before(f"http://127.0.0.1:{free_port(18900)}", tmp_path)
    with server:
        r = ask(server.url, key)
    assert r.status_code == 502 and "production is unreachable" in r.json()["error"]["message"]
    assert statuses(log) == ["error"]


def test_an_engine_slower_than_the_request_timeout_is_a_504(tmp_path: Path) -> None:
    slow = FaultyEngine()
    slow.delay_s = 3.0
    with ServerThread(slow.app()) as engine:
        server, key, log = gateway_before(engine.url, tmp_path, timeout_s=0.5)
        with server:
            r = ask(server.url, key)
    assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
    assert statuses(log) == ["error"]


@pytest.mark.parametrize("engine_server", [streaming_engine(cut_after=None)], indirect=True)
def test_a_stream_is_passed_on_chunk_by_chunk_with_usage(engine_server: str, tmp_path: Path) -> None:
    server, key, log = gateway_before(engine_server, tmp_path)
    with server:
        r = ask(server.url, key, stream=True)
    assert r.status_code == 200
    events = [line[len("data: ") :] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == " at dock nine"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert statuses(log) == ["ok"]
    assert [json.loads(line)["answer"] for line in log.read_text().splitlines()] == [" at dock nine"]


def answering_engine(text: str) -> Starlette:
    """A completions endpoint that answers every request with ``text``, whole."""

    async def completions(request: Request) -> Response:
        usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        body = {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "usage": usage}
        return Response(json.dumps(body), media_type="application/json")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


@pytest.mark.parametrize(
    "engine_server", [answering_engine("Ask ops@example.com, or see the runbook. " + "x" * 5000)], indirect=True
)
def test_the_query_log_keeps_each_answer_redacted_and_cut_for_the_online_judge(
    engine_server: str, tmp_path: Path
) -> None:
    from lockgate.serving.gateway import ANSWER_LOG_CHARS

    server, key, log = gateway_before(engine_server, tmp_path)
    with server:
        assert ask(server.url, key).status_code == 200
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["answer"].startswith("Ask [EMAIL]") and "ops@example.com" not in row["answer"], row["answer"][:80]
    assert ANSWER_LOG_CHARS - 20 <= len(row["answer"]) <= ANSWER_LOG_CHARS, len(row["answer"])


@pytest.mark.parametrize("engine_server", [streaming_engine(cut_after=None, pause_s=0.5)], indirect=True)
def test_a_stream_longer_than_the_request_timeout_is_not_cut_while_it_keeps_sending(
    engine_server: str, tmp_path: Path
) -> None:
    server, key, log = gateway_before(engine_server, tmp_path, timeout_s=1.0)  # the stream lasts about 1.5 s
    with server:
        r = ask(server.url, key, stream=True)
    assert r.text.rstrip().endswith("data: [DONE]") and statuses(log) == ["ok"]


@pytest.mark.parametrize("engine_server", [streaming_engine(cut_after=1)], indirect=True)
def test_a_stream_the_engine_cuts_off_ends_and_is_logged_as_an_error(engine_server: str, tmp_path: Path) -> None:
    server, key, log = gateway_before(engine_server, tmp_path)
    with server:
        r = ask(server.url, key, stream=True)
        assert r.status_code == 200  # the headers were out before the engine failed
        assert "[DONE]" not in r.text and " at" in r.text
        # The gateway still answers the next request (the broken connection was not reused).
        assert ask(server.url, key, stream=True).status_code == 200
    assert statuses(log)[0] == "error"

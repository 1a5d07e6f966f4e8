"""The gateway's client to its vLLM engines, and what each way of failing means to a caller.

Every exception the client lets out is a key of ``ERROR_MAP`` (a test walks aiohttp's exceptions
to keep it so); the gateway answers a failed request with the mapped status. A stream that breaks
after its first chunk has already sent its status line: the gateway logs it and ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, NamedTuple

import aiohttp
from aiohttp import client_exceptions as ce

_HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class EngineFailure(NamedTuple):
    """How the gateway answers a request its engine failed: the status, and what the engine did."""

    status: int
    says: str


TIMED_OUT = EngineFailure(504, "timed out")
UNREACHABLE = EngineFailure(502, "is unreachable")
# Not an exception of the client: the engine answered 200 with a body that is not a completion.
NOT_A_COMPLETION = EngineFailure(502, "answered with something that is not a completion")

ERROR_MAP: dict[type[BaseException], EngineFailure] = {
    # No answer within request_timeout_s, to connect or between two reads (asyncio.TimeoutError is
    # TimeoutError; aiohttp's own timeouts subclass it).
    TimeoutError: TIMED_OUT,
    ce.ServerTimeoutError: TIMED_OUT,
    ce.ConnectionTimeoutError: TIMED_OUT,
    ce.SocketTimeoutError: TIMED_OUT,
    # No connection: the engine is down or restarting, or the manifest names a wrong host.
    ce.ClientConnectionError: UNREACHABLE,
    ce.ClientOSError: UNREACHABLE,
    ce.ClientConnectorError: UNREACHABLE,
    ce.ClientConnectorDNSError: UNREACHABLE,
    ce.ClientProxyConnectionError: UNREACHABLE,
    ce.UnixClientConnectorError: UNREACHABLE,
    ce.ClientSSLError: UNREACHABLE,
    ce.ClientConnectorSSLError: UNREACHABLE,
    ce.ClientConnectorCertificateError: UNREACHABLE,
    ce.ClientConnectionResetError: UNREACHABLE,
    ce.ServerConnectionError: UNREACHABLE,
    ce.ServerDisconnectedError: UNREACHABLE,
    ce.ServerFingerprintMismatch: UNREACHABLE,
    # The answer was cut off or is not HTTP the client can read.
    ce.ClientPayloadError: UNREACHABLE,
    ce.ClientResponseError: UNREACHABLE,
    ce.ContentTypeError: UNREACHABLE,
    ce.ClientHttpProxyError: UNREACHABLE,
    ce.TooManyRedirects: UNREACHABLE,
    ce.WSServerHandshakeError: UNREACHABLE,
    ce.UploadAbortedError: UNREACHABLE,
    # The manifest's engine URL is not one the client can call.
    ce.InvalidURL: UNREACHABLE,
    ce.InvalidUrlClientError: UNREACHABLE,
    ce.InvalidUrlRedirectClientError: UNREACHABLE,
    ce.NonHttpUrlClientError: UNREACHABLE,
    ce.NonHttpUrlRedirectClientError: UNREACHABLE,
    ce.RedirectClientError: UNREACHABLE,
    # The root: an exception a newer aiohttp adds is still answered (the test asks for its own row).
    ce.ClientError: UNREACHABLE,
}

# What a call to an engine can raise, to catch: exactly the table's keys.
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = tuple(ERROR_MAP)


def failure_for(exc: BaseException) -> EngineFailure:
    """The table's row for an engine error: its own class's, else its nearest mapped base's.

    Raises:
        TypeError: ``exc`` is not one of ``UPSTREAM_ERRORS``.
    """
    for cls in type(exc).__mro__:
        if cls in ERROR_MAP:
            return ERROR_MAP[cls]
    raise TypeError(f"not an engine error: {type(exc).__name__}")


class EngineRefused(Exception):
    """The engine answered, with a status other than 200 and ``text`` as its body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.text = text


class EngineStream:
    """An engine's streamed answer (status 200): read ``lines``, then ``finish`` it."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self._reply = reply

    @property
    def lines(self) -> AsyncIterable[bytes]:
        """The answer's lines as they arrive."""
        return self._reply.content

    def finish(self, complete: bool) -> None:
        """Keep a complete stream's connection for the next request; close a broken or abandoned one,
        which also tells vLLM to stop generating."""
        if complete:
            self._reply.release()
        else:
            self._reply.close()


class EngineClient:
    """One connection pool to every engine: completions, whole or streamed, and health checks.

    ``start`` and ``close`` bracket its use (the gateway's lifespan): the pool belongs to the
    event loop that serves requests.
    """

    def __init__(self, request_timeout_s: float) -> None:
        self.request_timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        # aiohttp, not httpx, to the engines: httpx's connection pool bookkeeping cost about 1 ms
        # of CPU per forwarded request at concurrency 8 (profiled), a tenth of the gateway's budget.
        # request_timeout_s bounds connecting and each wait for data, not the whole answer: a long
        # stream that keeps sending is not cut off.
        wait = self.request_timeout_s
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=wait, sock_read=wait),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open connection pool."""
        assert self._session is not None, "EngineClient.start() was not awaited"
        return self._session

    async def healthy(self, engine_url: str) -> bool:
        """Whether the engine answers its health check with 200 within two seconds."""
        try:
            async with self.session.get(f"{engine_url}/health", timeout=_HEALTH_TIMEOUT) as reply:
                return reply.status == 200
        except UPSTREAM_ERRORS:
            return False

    async def complete(self, engine_url: str, payload: dict[str, Any]) -> str:
        """The engine's whole answer to a completions request, as text.

        Raises:
            EngineRefused: the engine answered with another status than 200.
            UPSTREAM_ERRORS: see ``ERROR_MAP``.
        """
        async with self.session.post(f"{engine_url}/v1/completions", json=payload) as reply:
            # Bytes that are not UTF-8 become U+FFFD: the body is judged as JSON, not failed as text.
            status, text = reply.status, await reply.text(errors="replace")
        if status != 200:
            raise EngineRefused(status, text)
        return text

    async def stream(self, engine_url: str, payload: dict[str, Any]) -> EngineStream:
        """The engine's streamed answer to a completions request, once its status line is in.

        Raises:
            EngineRefused: the engine answered with another status than 200 (its body read, if it can be).
            UPSTREAM_ERRORS: see ``ERROR_MAP``.
        """
        reply = await self.session.post(f"{engine_url}/v1/completions", json=payload)
        if reply.status != 200:
            try:
                text = await reply.text(errors="replace")
            except UPSTREAM_ERRORS:
                text = ""
            finally:
                reply.release()
            raise EngineRefused(reply.status, text)
        return EngineStream(reply)

"""A lean httpx transport for the Akua API: one origin, pooled HTTP/1.1 connections.

httpx's default transport goes through httpcore's connection pool, which on
every request walks every pooled connection (``is_idle``, ``has_expired``,
and a socket-readability probe that builds anyio's whole attribute table
each time): measured here, about 2.9 ms of CPU per POST against 0.9-1.2 ms
for this transport, whatever the pool size.  The crawler talks to one
origin, so the pool can be a stack of idle ``httpcore.AsyncHTTPConnection``
objects behind a ``CapacityLimiter`` whose size can change while the run
goes: the client sizes it to rate x observed latency (Little's law).

Only used for a direct route; when an HTTP proxy applies, the client keeps
httpx's own transport, which knows how to talk through it.
"""

from __future__ import annotations

import ssl
from typing import Final

import anyio
import httpcore
import httpx

KEEPALIVE_S: Final = 5.0  # idle connections older than this are closed, not reused

# httpcore's exceptions as httpx's, most specific first, so callers see one family.
_AS_HTTPX: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


class _ResponseTooLarge(httpx.ReadError):
    """The body exceeded the limit the client set; the connection is closed."""


class LeanPool(httpx.AsyncBaseTransport):
    def __init__(self, *, size: int, ssl_context: ssl.SSLContext | None, max_body_bytes: int) -> None:
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._slots = anyio.CapacityLimiter(max(1, size))
        self._ssl = ssl_context
        self._max_body = max_body_bytes
        self.opened = 0  # connections opened, for statistics and tests

    @property
    def size(self) -> int:
        return int(self._slots.total_tokens)

    def resize(self, size: int) -> None:
        """Allow ``size`` requests in flight; waiters are let in at once when it grows."""
        size = max(1, size)
        if size != self._slots.total_tokens:
            self._slots.total_tokens = size

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._slots:
            connection = await self._connection_for(request.url)
            core_request = httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
            try:
                try:
                    answer = await connection.handle_async_request(core_request)
                    body = await self._read(answer, request)
                except _ResponseTooLarge:
                    raise
                except Exception as exc:
                    raise _as_httpx(exc, request) from exc
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.aclose()
                raise
            if connection.is_idle():
                self._idle.append(connection)
            else:
                await connection.aclose()
        return httpx.Response(
            answer.status, headers=answer.headers, content=body, extensions=answer.extensions,
            request=request,
        )

    async def _connection_for(self, url: httpx.URL) -> httpcore.AsyncHTTPConnection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely to be stale
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        self.opened += 1
        port = url.port or (443 if url.scheme == "https" else 80)
        return httpcore.AsyncHTTPConnection(
            httpcore.Origin(url.raw_scheme, url.raw_host, port),
            ssl_context=self._ssl,
            keepalive_expiry=KEEPALIVE_S,
        )

    async def _read(self, answer: httpcore.Response, request: httpx.Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in answer.aiter_stream():
            size += len(chunk)
            if size > self._max_body:
                raise _ResponseTooLarge(
                    f"response body over {self._max_body} bytes; not read", request=request
                )
            chunks.append(chunk)
        await answer.aclose()
        return b"".join(chunks)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for connection in idle:
                await connection.aclose()


def _as_httpx(exc: Exception, request: httpx.Request) -> Exception:
    for core_type, httpx_type in _AS_HTTPX:
        if isinstance(exc, core_type):
            return httpx_type(str(exc) or type(exc).__name__, request=request)
    return exc

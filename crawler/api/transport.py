"""A lean httpx transport for the Akua API: one origin, pooled HTTP/1.1 connections.

httpx's default transport goes through httpcore's connection pool, which on
every request walks every pooled connection (``is_idle``, ``has_expired``,
and a socket-readability probe that builds anyio's whole attribute table
each time): measured here, about 2.9 ms of CPU per POST against 0.9-1.2 ms
for a stack of idle ``httpcore`` connections, whatever the pool size.  The
crawler talks to one origin, so the pool is a stack of idle connections
(``crawler.api.connection``: ``crawler.http1`` over ``crawler.api.wire``, one write per
request) behind a
``CapacityLimiter`` whose size can change while the run goes: the client
sizes it to rate x observed latency (Little's law).

Only used for a direct route; when an HTTP proxy applies, the client keeps
httpx's own transport, which knows how to talk through it.
"""

from __future__ import annotations

import ssl
from typing import Final

import anyio
import httpx

from crawler.api.connection import Connection

KEEPALIVE_S: Final = 5.0  # idle connections older than this are closed, not reused


class LeanPool(httpx.AsyncBaseTransport):
    def __init__(
        self, *, size: int, ssl_context: ssl.SSLContext | None, max_body_bytes: int
    ) -> None:
        self._idle: list[Connection] = []
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
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.content  # built in full by the client: never a stream
        async with self._slots:
            connection = await self._connection_for(request, timeouts)
            try:
                response = await connection.exchange(
                    request, request.headers.raw, body, timeouts, self._max_body
                )
            except BaseException:
                await connection.aclose()
                raise
            if connection.reusable(KEEPALIVE_S, probe=False):  # probed when it is taken again
                self._idle.append(connection)
            else:
                await connection.aclose()
        return response

    async def _connection_for(
        self, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> Connection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely to be stale
            if connection.reusable(KEEPALIVE_S):
                return connection
            await connection.aclose()
        self.opened += 1
        return await Connection.open(request, self._ssl, timeouts.get("connect"))

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for connection in idle:
                await connection.aclose()

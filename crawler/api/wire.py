"""The byte stream under one Akua connection: an asyncio protocol that keeps reading.

anyio's socket stream stops reading after every chunk it hands out and starts
again on the next ``receive``: two ``epoll_ctl`` calls per response, on the
event loop thread that every other part of a run also needs (measured at
R = 300: about a tenth of that thread's time).  Here the transport reads
whenever data comes, into a buffer bounded by ``READ_BUFFER``: above it,
reading pauses until the buffer is taken.  The same callbacks say when the
server has closed its side, so an idle connection's state is known without
asking the socket.

The interface is anyio's ``ByteStream`` (``receive`` raises ``EndOfStream``
at the end, ``BrokenResourceError`` when the connection broke, ``ClosedResourceError``
once closed here) so that ``crawler.api.connection`` speaks h11 over either.
Asyncio only, as the crawler runs anyio on asyncio (``crawler.registry.lane``
relies on it too).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Final

import anyio
import anyio.abc

READ_BUFFER: Final = 262_144  # bytes read ahead of the reader before reading pauses
WRITE_BUFFER: Final = 65_536  # bytes queued in the transport before send() waits
HAPPY_EYEBALLS_S: Final = 0.25  # RFC 8305's delay before trying the host's next address


class Wire(asyncio.Protocol, anyio.abc.ByteStream):
    """One TCP (or TLS) connection's bytes.  Created by :meth:`connect`."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None  # the reader's or the writer's
        self._writable = True
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> tuple[Wire, socket.socket | None]:
        """Open the connection (TLS when ``ssl_context`` is given); return it and its socket.

        Raises what the system does (``OSError``, ``ssl.SSLError``); the caller bounds
        the time it may take."""
        loop = asyncio.get_running_loop()
        _, wire = await loop.create_connection(
            cls, host, port, ssl=ssl_context, server_hostname=host if ssl_context else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS_S,  # as anyio.connect_tcp: one blackholed
        )                                           # address family cannot hold the connect
        raw = wire._transport.get_extra_info("socket") if wire._transport else None
        return wire, raw

    @property
    def finished(self) -> bool:
        """The server closed its side, the connection broke, or bytes came unasked."""
        return self._eof or self._lost or self._closed or bool(self._buffer)

    # asyncio.Protocol: called by the event loop.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_BUFFER and not self._reading_paused and self._transport:
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # the transport closes itself (TLS transports require it)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._writable = True
        self._wake()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # anyio.abc.ByteStream: called by the connection, one exchange at a time.

    async def receive(self, max_bytes: int = 65_536) -> bytes:
        while not self._buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            if self._eof or self._lost:
                raise anyio.EndOfStream
            await self._wait()
        chunk = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        if self._reading_paused and len(self._buffer) <= READ_BUFFER // 2:
            self._reading_paused = False
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost or self._transport is None:
            raise anyio.BrokenResourceError from self._error
        self._transport.write(item)
        while not self._writable:
            await self._wait()
        if self._lost and self._error is not None:
            raise anyio.BrokenResourceError from self._error

    async def send_eof(self) -> None:
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()

    async def aclose(self) -> None:
        """Close now.  Bytes still queued (a write that timed out) are dropped, and TLS
        ends without a close_notify, as it did over anyio (``standard_compatible=False``)."""
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size() or transport.get_extra_info("sslcontext"):
                transport.abort()
            else:
                transport.close()
            # The socket is closed by a callback the loop runs next: let it run now, so
            # the server sees the close even if the caller blocks the loop after this.
            await asyncio.sleep(0)
        self._wake()


__all__ = ["Wire"]

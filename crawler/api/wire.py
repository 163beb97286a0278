"""The byte stream under one Akua connection: an asyncio protocol that keeps reading.

anyio's socket stream stops reading after every chunk it hands out and starts
again on the next ``receive``: two ``epoll_ctl`` calls per response, on the
event loop thread that every other part of a run also needs (measured at
R = 300: about a tenth of that thread's time).  Here the transport reads
whenever data comes, into a buffer bounded by ``READ_BUFFER``: above it,
reading pauses until the buffer is taken.  The same callbacks say when the
server has closed its side (``finished``); the pool still asks the socket
before a reuse, for a close the loop has not handled yet.

The interface is anyio's ``ByteStream`` (``receive`` raises ``EndOfStream``
at the end, ``BrokenResourceError`` when the connection broke, ``ClosedResourceError``
once closed here) so that ``crawler.api.connection`` speaks HTTP/1.1 over either.
Asyncio only, as the crawler runs anyio on asyncio (``crawler.registry.lane``
relies on it too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from typing import Any, Final

import anyio
import anyio.abc

READ_BUFFER: Final = 262_144  # bytes read ahead of the reader before reading pauses
WRITE_BUFFER: Final = 65_536  # over this much queued, send() waits until under a quarter
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
        the time it may take.  A cancelled connect leaves no socket open."""
        sock = await _connected_socket(host, port)
        try:
            _, wire = await asyncio.get_running_loop().create_connection(
                cls, sock=sock, ssl=ssl_context, server_hostname=host if ssl_context else None
            )
        except BaseException:
            sock.close()  # the transport closes it too when it got that far: a no-op then
            raise
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
        if transport is not None and not self._lost:
            if (transport.is_closing() or transport.get_write_buffer_size()
                    or transport.get_extra_info("sslcontext")):
                transport.abort()  # also when closing already: close() waits for the buffer
            else:
                transport.close()
            # The socket is closed by a callback the loop runs next: let it run now, so
            # the server sees the close even if the caller blocks the loop after this.
            await asyncio.sleep(0)
        self._wake()


async def _connected_socket(host: str, port: int) -> socket.socket:
    """A TCP socket connected to ``host``: RFC 8305's happy eyeballs over its addresses.

    One attempt starts every ``HAPPY_EYEBALLS_S`` (or as soon as the one before failed),
    families alternating, so a blackholed address cannot hold the connect; the first to
    connect wins and every other socket is closed, on cancellation too.  (asyncio's own
    ``happy_eyeballs_delay`` can drop a socket it connected when it is cancelled.)"""
    targets: list[tuple[int, Any]]
    try:
        targets = [(socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET,
                    (host, port))]
    except ValueError:  # a name, not an address literal
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        targets = _interleaved([(info[0], info[4]) for info in infos])
    loop = asyncio.get_running_loop()
    connected: list[socket.socket] = []
    errors: list[OSError] = []

    async def attempt(family: int, address: Any, failed: anyio.Event) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            failed.set()
            return
        except BaseException:
            sock.close()
            raise
        connected.append(sock)  # no wait since the connect: a cancellation cannot lose it
        attempts.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as attempts:
            for family, address in targets:
                failed = anyio.Event()
                attempts.start_soon(attempt, family, address, failed)
                with anyio.move_on_after(HAPPY_EYEBALLS_S):
                    await failed.wait()
    except BaseException:
        for sock in connected:
            sock.close()
        raise
    for extra in connected[1:]:
        extra.close()
    if connected:
        return connected[0]
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"all {len(errors)} addresses of {host} refused the connection: "
                  + "; ".join(str(exc) for exc in errors))


def _interleaved(targets: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """The addresses in resolver order, families alternating (RFC 8305, section 4)."""
    first = [t for t in targets if t[0] == targets[0][0]] if targets else []
    other = [t for t in targets if t not in first]
    out: list[tuple[int, Any]] = []
    for at in range(max(len(first), len(other))):
        out += first[at:at + 1] + other[at:at + 1]
    return out


__all__ = ["Wire"]

"""One HTTP/1.1 connection to Akua, framed by ``crawler.http1`` over a :class:`~crawler.api.wire.Wire`.

``httpcore``'s connection wraps each request in six tracing context managers,
sends the head and the body in two writes and asks anyio for the socket's
whole attribute table to see whether an idle connection is still usable.
Per write to Akua that was about a quarter of the crawler's CPU.  Here each
request is one write (head and body) and each response one read loop, parsed
by llhttp (``crawler.http1``; h11, httpcore's engine, cost about four times
as much per exchange), over a stream that keeps reading (``crawler.api.wire``)
and so knows when the server closed its side.

Errors come out as httpx's exceptions, in the same classes httpcore gives:
``ConnectError``/``ConnectTimeout`` before anything was sent (the client
knows such a request never reached Akua), ``WriteError``/``WriteTimeout``,
``ReadError``/``ReadTimeout``, ``RemoteProtocolError`` (a server that closed
without answering included).  A connection is reused only when both sides
finished the exchange cleanly (a complete answer that keeps the connection
and nothing after it), it was used within
``keepalive_s``, the server has not closed it or sent anything unasked (as
far as the loop has seen), and its socket has nothing to read (a
zero-timeout ``poll`` when it is taken).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Final

import anyio
import anyio.abc
import httpx

from crawler.api.wire import Wire
from crawler.http1 import MalformedResponse, ResponseReader, raw_request_head

READ_CHUNK: Final = 65_536


class _ResponseTooLarge(httpx.ReadError):
    """The body exceeded the limit the client set; the connection is closed."""


class Connection:
    def __init__(self, stream: anyio.abc.ByteStream, raw: socket.socket | None) -> None:
        self._stream = stream
        self._raw = raw
        self._reusable = True  # nothing sent yet; after an exchange, whether it ended cleanly
        self._used_at = time.monotonic()

    @classmethod
    async def open(
        cls, request: httpx.Request, ssl_context: ssl.SSLContext | None, timeout_s: float | None
    ) -> Connection:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        context = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        with anyio.CancelScope(deadline=_deadline(timeout_s)) as connecting:
            try:
                stream, raw = await Wire.connect(host, port, context)
            except TimeoutError:  # the system's (ETIMEDOUT)
                raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                           request=request) from None
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ConnectError(_describe(exc), request=request) from exc
        if connecting.cancelled_caught:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request)
        return cls(stream, raw)

    def reusable(self, keepalive_s: float, *, probe: bool = True) -> bool:
        """Whether a request may go on this connection.

        Over a :class:`Wire` the event loop has already said whether the server closed
        its side or sent bytes unasked.  ``probe`` asks the socket too (a zero-timeout
        ``poll``): the loop runs a socket's read callback only after the tasks already
        due, so a close that reached the kernel a moment ago may not have been seen.
        The check made when a connection goes back to the pool skips the probe, since
        the one made before it is used again looks anyway."""
        if not self._reusable:
            return False
        if time.monotonic() - self._used_at > keepalive_s:
            return False
        if isinstance(self._stream, Wire) and self._stream.finished:
            return False
        if probe and self._raw is not None:
            fd = self._raw.fileno()
            if fd < 0:
                return False
            readable = select.poll()
            readable.register(fd, select.POLLIN)
            # EOF or stray bytes on an idle connection: the server is done with it.
            return not readable.poll(0)
        return True

    async def exchange(
        self,
        request: httpx.Request,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeouts: dict[str, float | None],
        max_body: int,
    ) -> httpx.Response:
        """Send ``request`` (``body`` already read), return the whole response."""
        self._reusable = False  # until this exchange ends cleanly
        try:
            head = raw_request_head(request.method.encode("ascii"), request.url.raw_path, headers)
            _check_framing(headers, body)
        except ValueError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from None
        # A plain cancel scope with a deadline around each wait: anyio.fail_after
        # adds two generator context managers to every socket operation.
        with anyio.CancelScope(deadline=_deadline(timeouts.get("write"))) as writing:
            try:
                await self._stream.send(head + body)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                if _timed_out(exc):  # the system's (ETIMEDOUT): a timeout all the same
                    raise httpx.WriteTimeout("writing the request timed out",
                                             request=request) from None
                raise httpx.WriteError(_describe(exc), request=request) from exc
        if writing.cancelled_caught:
            raise httpx.WriteTimeout("writing the request timed out", request=request)
        reader = ResponseReader(head=request.method == "HEAD", max_body=max_body)
        read_timeout = timeouts.get("read")
        while True:
            with anyio.CancelScope(deadline=_deadline(read_timeout)) as reading:
                try:
                    data = await self._stream.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError,
                        anyio.ClosedResourceError) as exc:
                    if _timed_out(exc):  # the system's (ETIMEDOUT)
                        raise httpx.ReadTimeout("reading the response timed out",
                                                request=request) from None
                    if isinstance(exc, (OSError, anyio.ClosedResourceError)):
                        raise httpx.ReadError(_describe(exc), request=request) from exc
                    data = b""  # the end, or a broken connection: was the answer complete?
            if reading.cancelled_caught:
                raise httpx.ReadTimeout("reading the response timed out", request=request)
            try:
                if not data:
                    reader.eof()
                    break
                if reader.feed(data):
                    break
            except MalformedResponse as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        if reader.too_large:
            raise _ResponseTooLarge(f"response body over {max_body} bytes; not read",
                                    request=request)
        self._reusable = reader.reusable
        self._used_at = time.monotonic()
        return httpx.Response(
            reader.status,
            headers=reader.headers,
            content=reader.body,
            extensions={"http_version": b"HTTP/" + reader.http_version.encode("ascii"),
                        "reason_phrase": reader.reason.encode("latin-1")},
            request=request,
        )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(OSError, anyio.BrokenResourceError, ssl.SSLError):
                await self._stream.aclose()


def _check_framing(headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
    """The body goes as ``Content-Length`` says (httpx sets it for the bytes it was given):
    a mismatch would leave Akua reading the next request as this one's body."""
    if any(name.lower() == b"transfer-encoding" for name, _ in headers):
        raise ValueError("a request body is sent with Content-Length, not chunked")
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    expected = [str(len(body)).encode("ascii")]
    if lengths != expected and (body or lengths not in ([], [b"0"])):
        raise ValueError(f"Content-Length {lengths!r} does not frame a {len(body)}-byte body")


def _deadline(timeout_s: float | None) -> float:
    return math.inf if timeout_s is None else anyio.current_time() + timeout_s


def _timed_out(exc: BaseException) -> bool:
    """ETIMEDOUT from the system, raised as it is or as the cause of a broken stream
    (the wire learns it from the transport's ``connection_lost``)."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)


def _describe(exc: BaseException) -> str:
    """The cause that says most: a broken stream's own text is empty, its cause is the
    system's error."""
    while isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["Connection"]

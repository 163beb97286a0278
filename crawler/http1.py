"""HTTP/1.1 without I/O: a request's head as bytes, and a response read from the bytes fed in.

The crawler's two hot paths, manifest requests to the registry
(``crawler.registry.direct``) and writes to Akua (``crawler.api.connection``),
frame their exchanges here.  Parsing is ``httptools`` (llhttp, the parser of
Node.js): a GET of a small manifest costs about 60 µs of CPU with it against
about 250 µs with ``h11``, the pure-Python engine, on this machine.

What llhttp leaves to its user is done here: a HEAD answer has no body
whatever its ``Content-Length`` says; a body without length or chunking ends
when the server closes (``eof``); informational answers (1xx but 101) are
skipped, and a protocol switch is refused; the head is refused past
``MAX_HEAD_BYTES`` or ``MAX_HEADERS`` (llhttp has no limit; ``http.client``'s
are the same); trailers of a chunked body are not headers; a body is cut at
``max_body`` bytes (the caller closes the connection); bytes the server sends
after the answer make the connection unfit for reuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import httptools

MAX_HEAD_BYTES: Final = 65_536  # status line and headers of one answer
MAX_HEADERS: Final = 100
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed
_UNSAFE_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")


class MalformedResponse(Exception):
    """The server's bytes are not an HTTP/1.1 response, or it closed before the end of one."""


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """``METHOD target HTTP/1.1`` and the header lines, checked: no name that is not a
    token, no control character (CR and LF above all) in a value or the target.

    Raises ``ValueError`` naming the header (never its value: it may be a credential).
    """
    return raw_request_head(method.encode("ascii"), target.encode("ascii"),
                            [(name.encode("ascii"), value.encode("latin-1"))
                             for name, value in headers])


def raw_request_head(method: bytes, target: bytes,
                     headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``request_head`` for names and values already in bytes."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"not an HTTP method: {method!r}")
    if not target or _UNSAFE_TARGET.search(target):
        raise ValueError("the request target is empty or holds a space or control character")
    lines = [b"%s %s HTTP/1.1" % (method, target)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"not a header name: {name!r}")
        if _UNSAFE_VALUE.search(value):
            raise ValueError(f"header {name.decode('ascii')} holds a control character")
        lines.append(name + b": " + value.strip(b" \t"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Stop(Exception):
    """Raised from a parser callback to stop llhttp where it is."""


class _TooManyHeaders(Exception):
    """Raised from ``on_header``: the answer has more than ``MAX_HEADERS`` headers."""


class ResponseReader:
    """One response, fed as it arrives; ``done`` once it is complete (or cut at ``max_body``).

    After ``done``: ``status``, ``http_version`` ("1.1"), ``reason``, ``headers`` (names as sent, values
    as bytes, in order), ``body``, ``too_large`` (the body went past
    ``max_body``: ``body`` holds its first ``max_body + 1`` bytes, the rest was not read) and
    ``reusable`` (both sides may go on with another exchange).
    """

    __slots__ = ("_body_length", "_chunks", "_head", "_head_bytes", "_head_fed",
                 "_informational", "_max_body", "_parser", "_size", "_until_eof", "done",
                 "headers", "http_version", "reason", "reusable", "started", "status",
                 "too_large")

    def __init__(self, *, head: bool = False, max_body: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head = head
        # A HEAD answer's bytes (a head, no more): llhttp stops at its end, so whether
        # anything came after it is seen here.
        self._head_bytes: bytearray | None = bytearray() if head else None
        self._informational = False
        self._head_fed = 0  # bytes fed before the head was complete
        self._max_body = max_body
        self._chunks: list[bytes] = []
        self._size = 0
        self._until_eof = False
        self._body_length: int | None = None
        self.status = 0
        self.http_version = "1.1"
        self.reason = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # any byte of an answer came
        self.done = False
        self.too_large = False
        self.reusable = False

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; whether the response is now complete."""
        if self.done:
            if data:
                self.reusable = False  # bytes nobody asked for
            return True
        self.started = self.started or bool(data)
        if not self.status:
            # llhttp keeps a partial head's bytes for as long as they come: a head still
            # incomplete after MAX_HEAD_BYTES is refused (at most one chunk more is held).
            if self._head_fed >= MAX_HEAD_BYTES:
                raise MalformedResponse(f"the answer's head is over {MAX_HEAD_BYTES} bytes")
            self._head_fed += len(data)
        if self._head_bytes is not None:
            self._head_bytes += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise MalformedResponse("the server switched protocols (an upgrade nobody asked for)") from None
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                raise MalformedResponse(f"the answer has more than {MAX_HEADERS} headers") from None
            if not self.done:  # a callback of ours failed for another reason
                raise
        except httptools.HttpParserError as exc:
            if not self.done:
                raise MalformedResponse(f"not an HTTP/1.1 response ({exc})") from None
            self.reusable = False  # garbage after a complete answer
        return self.done

    def eof(self) -> None:
        """The server closed its side: complete a body that runs to the end, or refuse."""
        if self.done:
            self.reusable = False
            return
        if not self.started:
            raise MalformedResponse("the server closed the connection without answering")
        if self.status and self._until_eof:
            self.done, self.reusable = True, False
            return
        raise MalformedResponse("the server closed the connection before the end of its answer")

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self.done:  # a second answer in the same bytes
            self.reusable = False
            raise _Stop

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:
            return  # a trailer after a chunked body: not a header of the answer
        if len(self.headers) >= MAX_HEADERS:
            raise _TooManyHeaders
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True
            return  # informational: its end comes next, then the real answer
        self.status = status
        self.http_version = self._parser.get_http_version()
        chunked = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self._body_length = int(value) if value.strip().isdigit() else None
            elif lowered == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
        # llhttp knows that 204 and 304 have no body; it cannot know the request was HEAD.
        no_body = self._head or status in (204, 304)
        self._until_eof = not no_body and not chunked and self._body_length is None
        if self._head:
            # The answer ends here.  Reused only
            # when nothing came after the head (and no informational answer before it).
            seen = self._head_bytes
            alone = seen is None or (not self._informational and seen.endswith(b"\r\n\r\n")
                                     and seen.count(b"\r\n\r\n") == 1)
            self._finish(self._parser.should_keep_alive() and alone)
            raise _Stop
        if not no_body and self._body_length is not None and self._body_length > self._max_body:
            self.too_large = True  # not read: the caller refuses it from the header
            self._finish(False)
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        self._chunks.append(body)
        if self._size > self._max_body:
            # Keep max_body + 1 bytes: enough to show the body is too large.
            self._chunks[-1] = body[: len(body) - (self._size - self._max_body - 1)]
            self.too_large = True
            self._finish(False)
            raise _Stop

    def on_message_complete(self) -> None:
        if not self.status:  # the end of an informational answer
            self.headers = []
            self.reason = ""
            return
        self._finish(self._parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self.done = True
        self.reusable = keep_alive and not self._until_eof


__all__ = ["MalformedResponse", "ResponseReader", "raw_request_head", "request_head"]

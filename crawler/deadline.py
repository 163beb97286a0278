"""A total deadline for each registry HTTP request, and a way to abort one from outside.

``requests`` only knows per-operation timeouts: a connect timeout and a
timeout for each socket read.  A server that sends one byte a second (in its
headers or its body) never trips those, so a "30 s timeout" can last for ever.
This module makes the limit total:

* ``request_deadline(seconds)`` opens a budget on the current thread.  Every
  request made under it (the request itself and the auth round trips it sets
  off) connects within what is left, and reads its status line, headers and
  body through a reader that, before each ``recv``, gives the socket only the
  time that is left and fails with ``TimeoutError`` once it is spent.  urllib3
  then closes that connection.
* ``Call`` is the handle the event loop keeps for a registry call running on a
  worker thread.  ``call.abort()`` shuts down (``shutdown(2)``) every socket the
  call opened or used, so a thread the event loop abandoned (cancelled by a
  signal) stops at once instead of lingering until its deadline.

``DeadlineAdapter`` is the ``requests`` transport adapter that does both; mount
it on a session for ``http://`` and ``https://``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import connection as urllib3_connection
from urllib3 import connectionpool


class DeadlineExceeded(TimeoutError):
    """The request's total budget is spent (raised inside urllib3, which wraps it)."""


class Deadline:
    """A total time budget on the monotonic clock."""

    __slots__ = ("expires", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


class Call:
    """One registry call on a worker thread, as the event loop sees it: abortable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.aborted = False
        self.finished = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.finished:
                return
            if not self.aborted:
                self._sockets.append(sock)
                return
        _shutdown(sock)  # aborted before this socket existed: it must not be used either

    def abort(self) -> None:
        """Stop the call's I/O now; safe from any thread, a no-op once the call finished."""
        with self._lock:
            if self.finished or self.aborted:
                return
            self.aborted = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            self._sockets = []


def _shutdown(sock: socket.socket) -> None:
    # The plain socket method, also for an SSLSocket: it wakes a thread blocked in recv
    # without touching the TLS object that thread is using.
    with contextlib.suppress(OSError):  # already closed or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Local(threading.local):
    call: Call | None = None
    deadline: Deadline | None = None


_local = _Local()


@contextmanager
def running(call: Call) -> Iterator[Call]:
    """Run the current thread's requests as part of ``call`` (abortable through it)."""
    previous, _local.call = _local.call, call
    try:
        yield call
    finally:
        _local.call = previous
        call.finish()


@contextmanager
def request_deadline(seconds: float) -> Iterator[Deadline]:
    """A total budget for the requests made on this thread inside the block."""
    previous, _local.deadline = _local.deadline, Deadline(seconds)
    try:
        yield _local.deadline
    finally:
        _local.deadline = previous


def current_deadline() -> Deadline | None:
    return _local.deadline


def current_call() -> Call | None:
    """The abortable call the current thread's requests belong to, if any."""
    return _local.call


def _attach(sock: socket.socket | None) -> None:
    call = _local.call
    if call is not None and sock is not None:
        call.attach(sock)


# -------------------------------------------------------------- the reader


class _DeadlineRaw(io.RawIOBase):
    """A socket's raw reader that never waits past the thread's deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline | None, call: Call | None) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        self._call = call

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        deadline = self._deadline
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(f"no complete answer within {deadline.seconds:g}s")
            current = self._sock.gettimeout()
            self._sock.settimeout(remaining if current is None else min(current, remaining))
        count: int | None = self._raw.readinto(buffer)
        if self._call is not None and self._call.aborted:
            # The socket was shut down under us: what was read is not an answer.
            raise ConnectionAbortedError("the call was abandoned")
        return count

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading through ``_DeadlineRaw``."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader http.client made; nothing was read from it yet
        _attach(sock)
        self.fp = io.BufferedReader(_DeadlineRaw(sock, _local.deadline, _local.call))


class _DeadlineHTTPConnection(urllib3_connection.HTTPConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)  # before any TLS handshake, so an abort interrupts that too
        return sock


class _DeadlineHTTPSConnection(urllib3_connection.HTTPSConnection):
    response_class = _DeadlineResponse

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)
        return sock


class _HTTPPool(connectionpool.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(connectionpool.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOLS: dict[str, type[connectionpool.HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


#: Connection pools the adapter remembers (one per registry origin and TLS setting in practice).
MAX_REMEMBERED_POOLS = 16


class DeadlineAdapter(HTTPAdapter):
    """Transport adapter: default timeouts, capped by the thread's total deadline.

    It also remembers the urllib3 pool each origin was given.  ``requests``
    works the pool out again on every request (proxy selection, a pool key
    from the URL and the TLS settings, the pool manager's lookup): about 5%
    of ``plan``'s CPU for the same answer each time.  A pool closed since is
    never handed out again (urllib3 1.x closes the pools its manager evicts:
    every later request would fail), and ``close()`` forgets them all.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s
        self._pools: dict[tuple[Any, ...], connectionpool.HTTPConnectionPool] = {}

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> connectionpool.ConnectionPool:
        url = request.url or ""
        end = url.find("/", url.find("//") + 2)
        key: tuple[Any, ...] | None = (url if end < 0 else url[:end], verify, cert,
                                        tuple(proxies.items()) if proxies else None)
        try:
            known = self._pools.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable setting: ask requests every time
            key, known = None, None
        if known is not None and known.pool is not None:  # None once closed
            return known
        fresh = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        if key is not None and isinstance(fresh, connectionpool.HTTPConnectionPool):
            if len(self._pools) >= MAX_REMEMBERED_POOLS:
                self._pools.clear()
            self._pools[key] = fresh
        return fresh

    def close(self) -> None:
        self._pools.clear()
        super().close()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        budget = self._timeout_s
        deadline = _local.deadline
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise requests.Timeout(f"no complete answer within {deadline.seconds:g}s")
            budget = min(budget, remaining)
        call = _local.call
        if call is not None and call.aborted:
            raise requests.ConnectionError("the call was abandoned")
        return super().send(
            request,
            stream=stream,
            timeout=_capped(timeout, budget),
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def _capped(
    timeout: float | tuple[float, float] | tuple[float, None] | None, budget: float
) -> tuple[float, float]:
    """(connect, read) timeouts, none longer than the budget."""
    if timeout is None:
        return budget, budget
    if isinstance(timeout, tuple):
        connect, read = timeout
        return min(connect, budget), budget if read is None else min(read, budget)
    return min(timeout, budget), min(timeout, budget)


__all__ = [
    "Call",
    "Deadline",
    "DeadlineAdapter",
    "DeadlineExceeded",
    "current_call",
    "current_deadline",
    "request_deadline",
    "running",
]

"""The Akua double on a socket: ``AkuaDouble`` is ``AkuaCore`` plus an HTTP server.

``ThreadingHTTPServer``, a daemon thread per connection, HTTP/1.1 keep-alive.
Every answer goes out in a single write with Content-Length, and Nagle is off:
a head and a body in two small writes would meet the client's delayed ACK
and cost ~40 ms per request on a kept-alive connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from testkit.serving import serve_in_thread

from .core import AkuaCore
from .switches import Expected, RetryAfter, Switches
from .wire import Reply, Request

MAX_BODY: Final = 4 * 1024 * 1024
ADMIN_PREFIX: Final = "/_double/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a connection thread must never keep a test run alive
    allow_reuse_address = True  # a restarted double may take its old port back
    request_queue_size = 256  # a crawler opens its whole pool at once

    def __init__(self, address: tuple[str, int], double: AkuaDouble) -> None:
        self.double = double
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the SIGKILL tests do that on purpose) resets its
        # connection; that is the client's business, not a fault of the double.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        # shutdown() only stops accepting; kept-alive connections would go on
        # being served by their threads after stop() without this.
        with self.connections_lock:
            sockets = list(self.open_connections)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "akua-double"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # an idle kept-alive connection's thread ends eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the double's record is ``received``; stderr noise helps no test

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        double = self.server.double
        if self.path.startswith(ADMIN_PREFIX):
            reply = double.admin(self.command, self.path, body)
        else:
            headers = list(self.headers.items())
            reply = double.handle(Request(self.command, self.path, headers, body))
        if reply.drop:
            self._drop()
        else:
            self._send(reply)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a request whose body can't be framed."""
        if self.headers.get("Transfer-Encoding") is not None:
            # Not needed by any client of the double; refusing keeps framing simple.
            self._refuse(411, "send the body with Content-Length")
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not (length.isascii() and length.isdigit()):
            self._refuse(400, "bad Content-Length")
            return None
        size = int(length)
        if size > MAX_BODY:
            self._refuse(413, f"body larger than {MAX_BODY} bytes")
            return None
        body = self.rfile.read(size)
        if len(body) < size:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _refuse(self, status: int, message: str) -> None:
        # The unread body makes the connection unusable: answer, then close.
        self.close_connection = True
        self._send(self.server.double.transport_error(status, message))

    def _send(self, reply: Reply) -> None:
        lines = [
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines += [f"{name}: {value}" for name, value in reply.headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + reply.body)
        except OSError:  # the client gave up (timeout); nothing left to tell it
            self.close_connection = True

    def _drop(self) -> None:
        """Close without a word: SO_LINGER 0 makes the close an RST, like a crash."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            # The descriptor goes when finish() closes the stream around it.
            self.connection.close()


class AkuaDouble(AkuaCore):
    """A local, strict Akua packages API for tests, demos and benchmarks.

    Use as a context manager or with ``start()`` / ``stop()``; ``url`` is the
    API base ("http://127.0.0.1:PORT/v1"), ``base_url`` the server root where
    the admin endpoints (``/_double/...``) live.
    """

    def __init__(
        self,
        *,
        token: str,
        unique_names: bool = True,
        required_workspace: str | None = None,
        workspace_id: str = "ws_akuadouble",
        write_rate_limit: float | None = None,
        write_burst: float | None = None,
        retry_after: RetryAfter = "seconds",
        force_429_rate: float = 0.0,
        error_5xx_rate: float = 0.0,
        latency_s: float = 0.0,
        drop_after_commit_rate: float = 0.0,
        drop_before_commit_rate: float = 0.0,
        seed: int | None = None,
        alt_error_envelope: bool = False,
        html_error_statuses: Iterable[int] = (),
        expected: Expected | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        switches = Switches(
            token=token,
            unique_names=unique_names,
            required_workspace=required_workspace,
            workspace_id=workspace_id,
            write_rate_limit=write_rate_limit,
            write_burst=write_burst,
            retry_after=retry_after,
            force_429_rate=force_429_rate,
            error_5xx_rate=error_5xx_rate,
            latency_s=latency_s,
            drop_after_commit_rate=drop_after_commit_rate,
            drop_before_commit_rate=drop_before_commit_rate,
            seed=seed,
            alt_error_envelope=alt_error_envelope,
            html_error_statuses=frozenset(html_error_statuses),
            expected=expected,
        )
        super().__init__(switches, state_file=state_file, clock=clock)
        self._host = host
        self._port = port
        self._tls = tls  # a server-side context: the double speaks HTTPS
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> AkuaDouble:
        if self._server is not None:
            raise RuntimeError("the Akua double is running already")
        server = _Server((self._host, self._port), self)
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        # Keep the port: a restarted double answers where the client points.
        self._port = server.server_address[1]
        self._server = server
        self._thread = serve_in_thread(server, f"akua-double:{self._port}")
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Akua double is not running")
        return f"{'https' if self._tls else 'http'}://{self._host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + "/v1"

    def __enter__(self) -> AkuaDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

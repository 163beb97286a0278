"""A loopback HTTP server that answers one byte at a time, for ever.

``DripServer(phase="headers")`` sends a status line and then its headers one
byte per ``interval_s``, never finishing them; ``phase="body"`` sends complete
headers (``Content-Length`` of a megabyte) and then the body one byte per
``interval_s``.  Per-read socket timeouts never trip on such a server: only a
total deadline ends the request.

It counts the requests it received and notices when a client gives up on a
connection (``closed_by_client`` is set); ``wait_for_request()`` lets a test
synchronise on a request having arrived instead of sleeping.  Everything stops
on ``close()`` (or leaving the ``with`` block): no thread outlives it.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Final, Self

_MEGABYTE: Final = 1024 * 1024


class DripServer:
    def __init__(self, *, phase: str = "headers", interval_s: float = 0.05,
                 host: str = "127.0.0.1") -> None:
        if phase not in ("headers", "body"):
            raise ValueError(f"phase must be 'headers' or 'body', not {phase!r}")
        self.phase = phase
        self.interval_s = interval_s
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.05)  # lets the accept loop see the stop flag
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._request = threading.Event()
        self.requests = 0
        self.closed_by_client = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="drip-accept", daemon=True)

    @property
    def host(self) -> str:
        address, port = self._listener.getsockname()[:2]
        return f"{address}:{port}"

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def wait_for_request(self, timeout_s: float = 30.0) -> bool:
        return self._request.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.05)
            if not self._read_request(connection):
                return
            with self._lock:
                self.requests += 1
            self._request.set()
            if self.phase == "headers":
                head, byte, count = b"HTTP/1.1 200 OK\r\nX-Drip: ", b".", 10**9
            else:
                head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(_MEGABYTE).encode() + b"\r\n\r\n")
                byte, count = b" ", _MEGABYTE
            try:
                connection.sendall(head)
                for _ in range(count):
                    if self._stop.wait(self.interval_s):
                        return
                    connection.send(byte)
            except OSError:  # EPIPE / ECONNRESET: the client closed the connection
                self.closed_by_client.set()

    def _read_request(self, connection: socket.socket) -> bool:
        received = b""
        while b"\r\n\r\n" not in received:
            if self._stop.is_set():
                return False
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not chunk:
                return False
            received += chunk
        return True


__all__ = ["DripServer"]

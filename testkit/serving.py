"""Run a ``socketserver`` server on a background thread and stop it promptly.

``serve_forever`` checks its shutdown flag once per poll interval, 0.5 s by
default, so ``shutdown()`` waits up to that long: half a second per test
server adds up to minutes over the suite.  Every loopback server of the test
kit and the tests starts through ``serve_in_thread`` (a 10 ms interval) and
stops through ``stop_serving``.
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Final

POLL_INTERVAL_S: Final = 0.01  # the longest ``stop_serving`` waits for the serve loop
JOIN_TIMEOUT_S: Final = 10.0


class LoopbackHandler(BaseHTTPRequestHandler):
    """The base of every loopback test server's request handler.

    It sends without Nagle's delay: a handler writes its headers and its body
    separately, and the body would otherwise wait out the client's 40 ms delayed
    ACK on every answer.  It logs nothing (the stdlib's handler prints every
    request to stderr).
    """

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_in_thread(server: socketserver.BaseServer, name: str = "test-server",
                    *, start: bool = True) -> threading.Thread:
    """A daemon thread running ``server.serve_forever`` with a short poll interval."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S},
                              name=name, daemon=True)
    if start:
        thread.start()
    return thread


def stop_serving(server: socketserver.BaseServer, thread: threading.Thread | None) -> None:
    """Stop the serve loop (if it ever ran), close the listening socket, join the thread."""
    if thread is not None and thread.is_alive():
        server.shutdown()
        thread.join(JOIN_TIMEOUT_S)
    server.server_close()


__all__ = ["POLL_INTERVAL_S", "LoopbackHandler", "serve_in_thread", "stop_serving"]

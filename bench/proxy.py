"""A counting reverse proxy in front of the local registry.

LocalRegistry runs with its access log off, so the benchmark counts what
the crawler asks the registry by putting this in between: HTTP/1.1 with
keep-alive, one upstream connection per client connection, requests
counted by kind (catalog, tags, manifest GET, manifest HEAD, ...) before
they are forwarded.  The client's ``Host`` is passed on unchanged so any
URL the registry builds (``Link: rel=next``) points back at the proxy.

``delay_s`` holds every request that long before forwarding it: a registry
across a network instead of on loopback, where concurrency pays.
"""

from __future__ import annotations

import contextlib
import http.client
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "content-length"}
)
UPSTREAM_TIMEOUT_S: Final = 30.0


def request_kind(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return "ping"
    if path.startswith("/v2/_catalog"):
        return "catalog"
    if path.endswith("/tags/list"):
        return "tags"
    if "/manifests/" in path:
        return {"GET": "manifest_get", "HEAD": "manifest_head"}.get(method, f"manifest_{method.lower()}")
    if "/blobs/" in path:
        return "blob"
    return "other"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that resets a kept connection as it exits hung up; anything else is news.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _forward(self) -> None:
        with self.server.lock:
            self.server.counts[request_kind(self.command, self.path)] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.server.delay_s > 0:
            time.sleep(self.server.delay_s)
        try:
            status, reason, headers, payload = self._upstream_call(body)
        except (OSError, http.client.HTTPException):
            # Once more on a fresh connection (the registry may have closed an idle one).
            if self._upstream is not None:
                self._upstream.close()
            self._upstream = None
            try:
                status, reason, headers, payload = self._upstream_call(body)
            except (OSError, http.client.HTTPException) as exc:
                self.send_error(502, f"upstream: {exc}")
                return
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            upstream_length = next((v for n, v in headers if n.lower() == "content-length"), None)
            if upstream_length is not None:
                self.send_header("Content-Length", upstream_length)
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _upstream_call(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            host, port = self.server.upstream
            self._upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
        conn = self._upstream
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP:
                conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        payload = response.read()
        return response.status, response.reason, response.getheaders(), payload


class CountingProxy:
    """``with CountingProxy(registry_host) as proxy: ... proxy.host ... proxy.take()``."""

    def __init__(self, upstream_host: str, *, delay_s: float = 0.0) -> None:
        host, _, port = upstream_host.rpartition(":")
        self._server = _Server((host, int(port)), delay_s)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="counting-proxy", daemon=True,
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def take(self) -> dict[str, int]:
        """The counts since the last ``take``, and start counting afresh."""
        with self._server.lock:
            counts = dict(self._server.counts)
            self._server.counts.clear()
        return counts

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""A loopback HTTP proxy in front of the real registry, for faults one repository causes.

* ``gate``: each manifest GET waits until ``gate`` of them are in flight at once
  (or ``hold_s`` passed, a fail-safe), then goes to the registry.
  ``max_in_flight`` says how many were ever in flight together: a crawler that
  reads one manifest after another never gets past 1.
* ``broken``: manifest requests (GET and HEAD) of this repository answer 500.
* ``catalog_extra``: names appended to the registry's catalog answer.
* ``hold_until``: manifest GETs of every tag but ``free_tag`` wait for this event (or
  ``hold_s``, a fail-safe: ``held_too_long`` says it ran out).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

_MANIFEST = re.compile(r"^/v2/.+/manifests/[^/]+$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class GatingProxy:
    def __init__(
        self,
        upstream: str,
        *,
        gate: int = 1,
        hold_s: float = 5.0,
        broken: str | None = None,
        catalog_extra: tuple[str, ...] = (),
        hold_until: threading.Event | None = None,
        free_tag: str | None = None,
    ) -> None:
        self.upstream = upstream  # host:port of the real registry (plain HTTP)
        self.gate = gate
        self.broken = broken
        self.catalog_extra = catalog_extra
        self.broken_answers = 0
        self.hold_until = hold_until
        self.free_tag = free_tag
        self.held = 0  # GETs that waited for ``hold_until``
        self.held_too_long = False
        self.hold_s = hold_s
        self.max_in_flight = 0
        self.manifest_gets = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        proxy = self

        class Handler(LoopbackHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_HEAD(self) -> None:
                proxy._forward(self, "HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = serve_in_thread(self._server, "gating-proxy", start=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open.set()
        stop_serving(self._server, self._thread)

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?")[0]
        if self.broken is not None and path.startswith(f"/v2/{self.broken}/manifests/"):
            with self._lock:
                self.broken_answers += 1
            body = b'{"errors":[{"code":"UNKNOWN","message":"injected"}]}'
            handler.send_response(500)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if method == "GET":
                handler.wfile.write(body)
            return
        gated = method == "GET" and _MANIFEST.match(handler.path.split("?")[0]) is not None
        if gated and self.hold_until is not None and not path.endswith(f"/manifests/{self.free_tag}"):
            with self._lock:
                self.held += 1
            if not self.hold_until.wait(self.hold_s):
                self.held_too_long = True
        if gated:
            with self._lock:
                self.manifest_gets += 1
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                if self._in_flight >= self.gate:
                    self._open.set()
            self._open.wait(self.hold_s)
        try:
            upstream = http.client.HTTPConnection(self.upstream, timeout=30)
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = self.upstream
            upstream.request(method, handler.path, headers=headers)
            response = upstream.getresponse()
            body = response.read()
            upstream.close()
            if path == "/v2/_catalog" and self.catalog_extra and response.status == 200:
                document = json.loads(body)
                document["repositories"] = [*document["repositories"], *self.catalog_extra]
                body = json.dumps(document).encode()
        finally:
            if gated:
                with self._lock:
                    self._in_flight -= 1
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                handler.send_header(key, value)
        length = response.getheader("Content-Length") if method == "HEAD" else None
        handler.send_header("Content-Length", length or str(len(body)))
        handler.end_headers()
        if method == "GET":
            handler.wfile.write(body)

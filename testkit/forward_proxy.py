"""A plain-HTTP forward proxy on loopback that records what it carries.

Clients configured with ``HTTP_PROXY=http://127.0.0.1:PORT`` send it requests
with an absolute URL; it forwards each to its target and answers with the
target's reply.  ``seen`` lists (method, url, headers) of every request it
carried, so a test can tell whether a header such as ``Authorization`` went
through it.  ``CONNECT`` (HTTPS tunnels) is refused: not needed here.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

_HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "transfer-encoding",
                         "te", "trailer", "upgrade", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class Carried:
    method: str
    url: str
    headers: dict[str, str]


class ForwardProxy:
    def __init__(self) -> None:
        self.seen: list[Carried] = []
        lock = threading.Lock()
        proxy = self

        class Handler(LoopbackHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                with lock:
                    proxy.seen.append(Carried(self.command, self.path, dict(self.headers.items())))
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self.send_error(400, "absolute http:// URL expected")
                    return
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                try:
                    upstream.request(self.command, path or "/", body=body, headers=headers)
                    reply = upstream.getresponse()
                    content = reply.read()
                    self.send_response(reply.status, reply.reason)
                    for key, value in reply.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError as exc:
                    self.send_error(502, f"upstream: {exc}")
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def do_CONNECT(self) -> None:
                self.send_error(405, "CONNECT not supported")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = serve_in_thread(self._server, "forward-proxy", start=False)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stop_serving(self._server, self._thread)

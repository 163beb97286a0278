"""A loopback proxy in front of a real registry that pages listings its own way.

Distribution 2.8.2 answers tags/list in one piece and pages the catalog one
way only; real registries (GHCR, Quay, ECR, ACR, Harbor, distribution v3)
page in others.  ``PaginatingProxy`` reads the full catalog and tag lists
from the real registry behind it and serves them in pages shaped by
``Paging``: capped ``n``, short pages, relative, absolute or opaque
``Link``s, several link-values and rel tokens in one header, a last page
served for ever (same URL or a new one each time), a Link to another host,
``maxentries`` refusals (400 PAGINATION_NUMBER_INVALID), or no Link at all;
and HEAD answers without ``Docker-Content-Digest``.
Every other request (manifests, ``/v2/``) is passed through unchanged.
"""

from __future__ import annotations

import base64
import bisect
import http.client
import itertools
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from testkit.serving import LoopbackHandler, serve_in_thread, stop_serving

LinkStyle = Literal[
    "relative",  # </v2/...?n=N&last=X>; rel="next"
    "absolute",  # <http://host:port/v2/...>; rel="next"
    "bare-host",  # <http://host/v2/...>: the default port left out
    "opaque",  # </v2/...?page=TOKEN>, last= ignored
    "multi-rel",  # <first>; rel="first", <next>; rel="nofollow next" in one header
    "foreign",  # a Link to another loopback host
    "none",  # never a Link; last= honoured
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Paging:
    cap: int = 100  # most entries per page, whatever n asks
    default_n: int = 100  # when the request has no n
    short_by: int = 0  # serve this many fewer than allowed ("fewer than asked")
    max_entries: int | None = None  # n above it: 400 PAGINATION_NUMBER_INVALID (v3)
    link: LinkStyle = "relative"
    last_page: Literal["end", "same-url", "new-url"] = "end"  # the final page links on for ever
    endless: bool = False  # invent new entries for ever ("endless-000000001", ...), opaque Links
    head_digest: bool = True  # False: HEAD answers without Docker-Content-Digest (it is optional)


_FOREIGN_HOST: Final = "127.0.0.2:9"


class PaginatingProxy:
    """``with PaginatingProxy(upstream_host, Paging(...)) as proxy: proxy.host``."""

    def __init__(
        self, upstream: str, paging: Paging, *, bind: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = upstream
        self.paging = paging
        self.requests: list[str] = []  # "GET /v2/..." as received
        self._again = itertools.count(1)
        self._lock = threading.Lock()
        self._server = _QuietServer((bind, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        bound = self._server.server_address
        self.port: int = int(bound[1])
        self.bind = bind

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    def start(self) -> Self:
        self._thread = serve_in_thread(self._server, "paginating-proxy")
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- upstream

    def _upstream(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=10)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def full_listing(self, path: str) -> tuple[str, list[str], dict[str, Any]]:
        """(key, every entry sorted, the rest of the document) from the real registry."""
        if path == "/v2/_catalog":
            names: list[str] = []
            url: str | None = "/v2/_catalog?n=1000"
            while url:
                _status, headers, body = self._upstream("GET", url, {})
                names.extend(json.loads(body).get("repositories") or [])
                link = dict((k.lower(), v) for k, v in headers).get("link", "")
                url = link[1:link.index(">")] if link else None
            return "repositories", sorted(names), {}
        _status, _headers, body = self._upstream("GET", path, {})
        document = json.loads(body)
        return "tags", sorted(document.get("tags") or []), {"name": document.get("name")}

    # -- paging

    def page(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        paging = self.paging
        requested = int(query["n"]) if query.get("n", "").isdigit() else paging.default_n
        if paging.max_entries is not None and requested > paging.max_entries:
            body = {"errors": [{"code": "PAGINATION_NUMBER_INVALID",
                                "message": "invalid number of results requested",
                                "detail": {"n": requested}}]}
            return 400, {}, json.dumps(body).encode()
        if paging.endless:
            return self._endless(path, query, min(requested, paging.cap))
        key, entries, rest = self.full_listing(path)
        if paging.link == "opaque":
            token = query.get("page")
            start = int(base64.urlsafe_b64decode(token.encode())) if token else 0
        elif "last" in query:
            start = bisect.bisect_right(entries, query["last"])
        else:
            start = 0
        size = max(1, min(requested, paging.cap) - paging.short_by)
        chunk = entries[start:start + size]
        more = start + size < len(entries)
        headers: dict[str, str] = {}
        target: str | None = None
        if more:
            if paging.link == "opaque":
                token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
                target = f"{path}?{urlencode({'page': token})}"
            else:
                target = f"{path}?{urlencode({'n': requested, 'last': chunk[-1]})}"
        elif paging.last_page != "end":
            own = {k: v for k, v in query.items() if k != "again"}
            if paging.last_page == "new-url":
                own["again"] = str(next(self._again))
            target = f"{path}?{urlencode(own)}"
        if target is not None and paging.link != "none":
            headers["Link"] = self._link(target)
        return 200, headers, json.dumps({**rest, key: chunk}).encode()

    def _endless(self, path: str, query: dict[str, str], size: int) -> tuple[int, dict[str, str], bytes]:
        start = int(query.get("page", "0"))
        key = "repositories" if path == "/v2/_catalog" else "tags"
        chunk = [f"endless-{i:09d}" for i in range(start, start + size)]
        link = f'<{path}?{urlencode({"n": size, "page": start + size})}>; rel="next"'
        return 200, {"Link": link}, json.dumps({key: chunk}).encode()

    def _link(self, target: str) -> str:
        style = self.paging.link
        if style in ("relative", "opaque"):
            return f'<{target}>; rel="next"'
        if style == "absolute":
            return f'<http://{self.host}{target}>; rel="next"'
        if style == "bare-host":
            return f'<http://{self.bind}{target}>; rel="next"'
        if style == "foreign":
            return f'<http://{_FOREIGN_HOST}{target}>; rel="next"'
        first = urljoin(target, urlsplit(target).path)
        return f'<{first}>; rel="first", <{target}>; rel="nofollow next"'


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up on a listing (a cut, a refused Link) resets its
        # connection; that is the point of the test, not an error to print.
        pass


def _handler(proxy: PaginatingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            with proxy._lock:
                proxy.requests.append(f"{self.command} {self.path}")
            parts = urlsplit(self.path)
            listing = parts.path == "/v2/_catalog" or parts.path.endswith("/tags/list")
            if listing and self.command == "GET":
                status, headers, body = proxy.page(parts.path, dict(parse_qsl(parts.query)))
                headers = {"Content-Type": "application/json", **headers}
            else:
                forwarded = {k: v for k, v in self.headers.items()
                             if k.lower() in ("accept", "authorization")}
                status, pairs, body = proxy._upstream(self.command, self.path, forwarded)
                dropped = {"content-length", "connection", "transfer-encoding"}
                if self.command == "HEAD" and not proxy.paging.head_digest:
                    dropped.add("docker-content-digest")
                headers = {k: v for k, v in pairs if k.lower() not in dropped}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = _serve
        do_HEAD = _serve

    return Handler


__all__ = ["LinkStyle", "PaginatingProxy", "Paging"]

"""A worker thread's own HTTP/1.1 connection to the registry, for manifest requests.

A manifest GET through ``requests`` costs about 0.85 ms of the crawler's CPU:
``Session.send`` and ``HTTPAdapter`` (cookies, hooks, redirects), urllib3's
pool and response objects, ``http.client`` reading the head line by line and
parsing it with the ``email`` package.  The same exchange over a socket the
thread keeps, framed by ``crawler.http1`` (httptools), costs about a fifth of
that, the manifest's checks included.  Manifests are most of a crawl's
requests, so they take this line; everything else (catalog, tags, blobs,
tokens) stays on the ``requests`` session oras-py drives.

The line keeps the session's rules:

* the same total deadline and the same abort (``crawler.deadline``): every
  socket wait gets what is left of the thread's budget, and the socket is
  handed to the current ``Call`` so the event loop can shut it down;
* the same TLS settings: the CA bundle ``requests`` would use (the
  configured one, ``REQUESTS_CA_BUNDLE``, else certifi's), no verification
  when ``insecure``, the client certificate;
* the same errors: ``requests``' own exception classes, with the request and
  the cause attached, so ``crawler.registry.client`` translates them as it
  does the session's.

Unlike the session, it keeps no cookies (a registry's ``Set-Cookie`` on a manifest answer
is dropped), and it loads its TLS settings once per run.

It is not used at all when a proxy applies to the registry, and it hands a
request back to the session (``None``) when the answer needs what only the
session does: a redirect to follow, or a ``Content-Encoding`` to undo (the
line asks for ``identity``).  A request that finds its kept connection
closed by the registry before any answer is sent again once on a new one
(GET and HEAD are idempotent), as browsers do.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import select
import socket
import ssl
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import requests
import requests.utils
from requests.structures import CaseInsensitiveDict
from urllib3.util.ssl_ import create_urllib3_context

from crawler.deadline import Deadline, current_call, current_deadline
from crawler.http1 import MalformedResponse, ResponseReader, request_head

READ_CHUNK: Final = 65_536
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Set here: the line asks for the body as it is, and frames each request itself.
_OWN_HEADERS: Final = frozenset({"host", "accept-encoding", "connection", "content-length",
                                 "transfer-encoding"})


class _ClosedEarly(ConnectionError):
    """The registry closed a kept connection before answering."""


class DirectLine:
    """One kept connection to one registry origin; used by one thread at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        verify: bool | str,
        cert: tuple[str, str] | None,
    ) -> None:
        parts = urlsplit(base_url)
        self._base = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or _DEFAULT_PORTS[parts.scheme]
        default = self._port == _DEFAULT_PORTS[parts.scheme]
        bracketed = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = bracketed if default else f"{bracketed}:{self._port}"
        self._timeout_s = timeout_s
        self._verify = verify
        self._cert = cert
        self._sock: socket.socket | None = None
        self._reusable = False  # the last exchange on it ended cleanly, both sides

    def __repr__(self) -> str:
        return f"DirectLine({self._base!r}, open={self._sock is not None})"

    def send(
        self, method: str, url: str, headers: Mapping[str, str], max_bytes: int
    ) -> requests.Response | None:
        """The answer to ``method url``, its body read (at most ``max_bytes + 1`` bytes).

        ``None``: the session must make this request (a redirect or an encoded body).
        Raises ``requests.Timeout`` or ``requests.ConnectionError``, and
        ``requests.exceptions.InvalidHeader`` (naming the header, not its value) before
        anything is sent when a header holds a line break or control character.
        """
        if not url.startswith(self._base + "/"):
            return None
        target = url[len(self._base):]
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(headers)
        call = current_call()
        if call is not None and call.aborted:
            raise requests.ConnectionError("the call was abandoned", request=prepared)
        deadline = current_deadline()
        lines = [("Host", self._host_header), ("Accept-Encoding", "identity")]
        lines += [(k, v) for k, v in headers.items() if k.lower() not in _OWN_HEADERS]
        try:
            request = request_head(method, target, lines)
        except ValueError as exc:
            raise requests.exceptions.InvalidHeader(str(exc), request=prepared) from None
        for fresh in (False, True):
            if call is not None and call.aborted:
                self.close()
                raise requests.ConnectionError("the call was abandoned", request=prepared)
            sock = None if fresh or not self._usable() else self._sock
            reused = sock is not None
            try:
                if sock is None:
                    sock = self._connect(prepared, deadline)
                if call is not None:
                    call.attach(sock)
                return self._exchange(sock, prepared, request, deadline, max_bytes,
                                      method == "HEAD")
            except (OSError, MalformedResponse) as exc:
                self._drop(sock)
                if call is not None and call.aborted:  # whatever the shut-down socket said
                    raise requests.ConnectionError("the call was abandoned",
                                                   request=prepared) from exc
                if isinstance(exc, _ClosedEarly) and reused:
                    continue  # the registry closed the kept connection: once more, on a new one
                if isinstance(exc, requests.RequestException):
                    raise
                if isinstance(exc, TimeoutError):
                    text = (f"no complete answer within {deadline.seconds:g}s"
                            if deadline is not None and deadline.expired
                            else f"read timed out after {self._timeout_s:g}s")
                    raise requests.ReadTimeout(text, request=prepared) from exc
                raise requests.ConnectionError(exc, request=prepared) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        sock, self._sock, self._reusable = self._sock, None, False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _drop(self, sock: socket.socket | None) -> None:
        """Close the request's connection (and forget it, if it is still the line's)."""
        if sock is None or sock is self._sock:
            self.close()
        else:
            with contextlib.suppress(OSError):
                sock.close()

    # -- plumbing

    def _usable(self) -> bool:
        """The last exchange on the kept connection ended cleanly, and the registry has
        neither closed it nor sent anything unasked since (a zero-timeout ``poll``)."""
        sock = self._sock
        if sock is None or not self._reusable or sock.fileno() < 0:
            return False
        readable = select.poll()
        readable.register(sock.fileno(), select.POLLIN)
        return not readable.poll(0)

    def _budget(self, deadline: Deadline | None, prepared: requests.PreparedRequest,
                connecting: bool) -> float:
        budget = self._timeout_s
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining <= 0:
                text = f"no complete answer within {deadline.seconds:g}s"
                raise (requests.ConnectTimeout(text, request=prepared) if connecting
                       else requests.ReadTimeout(text, request=prepared))
            budget = min(budget, remaining)
        return budget

    def _connect(
        self, prepared: requests.PreparedRequest, deadline: Deadline | None
    ) -> socket.socket:
        """A new connection, kept as the line's; the socket in a local all along, so that a
        ``close`` from another thread at shutdown cannot pull it from under the request."""
        self.close()
        budget = self._budget(deadline, prepared, connecting=True)
        try:
            sock = socket.create_connection((self._host, self._port), timeout=budget)
        except TimeoutError as exc:
            raise requests.ConnectTimeout(exc, request=prepared) from exc
        except OSError as exc:
            raise requests.ConnectionError(exc, request=prepared) from exc
        call = current_call()
        if call is not None:
            call.attach(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._scheme == "https":
                # Built at the first connection, so a CA bundle or client key that cannot
                # be loaded is this request's error (the registry's), like urllib3's.
                tls = _tls_context(self._verify, self._cert)
                sock.settimeout(self._budget(deadline, prepared, connecting=True))
                # ``wrap_socket`` takes the descriptor from the plain socket: the TLS one is
                # handed to the call before the handshake, so an abort interrupts that too.
                sock = tls.wrap_socket(sock, server_hostname=self._host,
                                       do_handshake_on_connect=False)
                if call is not None:
                    call.attach(sock)
                sock.do_handshake()
        except requests.RequestException:
            sock.close()
            raise
        except TimeoutError as exc:
            sock.close()
            raise requests.ConnectTimeout(exc, request=prepared) from exc
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise requests.ConnectionError(exc, request=prepared) from exc
        self._sock = sock
        return sock

    def _exchange(
        self,
        sock: socket.socket,
        prepared: requests.PreparedRequest,
        head: bytes,
        deadline: Deadline | None,
        max_bytes: int,
        is_head: bool,
    ) -> requests.Response | None:
        self._reusable = False  # until this exchange ends cleanly
        sock.settimeout(self._budget(deadline, prepared, connecting=False))
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ClosedEarly(f"the registry closed the connection ({exc})") from exc
        reader = ResponseReader(head=is_head, max_body=max_bytes)
        while True:
            sock.settimeout(self._budget(deadline, prepared, connecting=False))
            try:
                data = sock.recv(READ_CHUNK)
            except ConnectionResetError as exc:
                if reader.started:
                    raise
                raise _ClosedEarly(f"the registry closed the connection ({exc})") from exc
            call = current_call()
            if call is not None and call.aborted:
                raise ConnectionAbortedError("the call was abandoned")
            if not data:
                if not reader.started:
                    raise _ClosedEarly("the registry closed the connection without answering")
                reader.eof()
                break
            if reader.feed(data):
                break
        self._reusable = reader.reusable
        if not reader.reusable:
            self._drop(sock)
        headers = reader.headers
        if reader.status in _REDIRECTS or _encoded(headers):
            return None
        return _response(prepared, reader)


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-encoding"
               and value.strip().lower() not in (b"", b"identity") for name, value in headers)


def _response(prepared: requests.PreparedRequest, reader: ResponseReader) -> requests.Response:
    """A ``requests.Response`` with the body already read, as the session's would be."""
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for raw_name, raw_value in reader.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        known = headers.get(name)
        headers[name] = value if known is None else f"{known}, {value}"
    response = requests.Response()
    response.status_code = reader.status
    response.headers = headers
    response.reason = reader.reason
    response.url = prepared.url or ""
    response.request = prepared
    response.encoding = requests.utils.get_encoding_from_headers(headers)
    response.elapsed = datetime.timedelta(0)
    response._content = reader.body
    response._content_consumed = True  # type: ignore[attr-defined]
    return response


@functools.lru_cache(maxsize=8)
def _tls_context(verify: bool | str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    """The checks ``requests`` makes for the same ``verify`` and ``cert``: urllib3's own
    context (names from the certificate's SAN only, TLS 1.2 at least, a client certificate
    also when asked for after the handshake), then the same CA bundle and certificate.

    One context per setting for the run, shared by every thread's line (a context is safe
    to share; loading a CA bundle costs about 0.1 s of CPU)."""
    context = create_urllib3_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        if os.path.isdir(bundle):
            context.load_verify_locations(capath=bundle)
        else:
            context.load_verify_locations(cafile=bundle)
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    context.set_alpn_protocols(["http/1.1"])
    return context


__all__ = ["DirectLine"]

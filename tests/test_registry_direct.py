"""crawler.registry.direct: a worker thread's kept connection for manifest requests.

Against a scripted loopback server that records every request head and
connection and answers each request with the next step of its script, and
against the drip server (tests/test_deadline.py's, one byte every 50 ms) for
the total deadline and the abort.  Every wait is bounded by a hang guard.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
from collections.abc import Iterator
from typing import Final

import pytest
import requests

from crawler.deadline import Call, request_deadline, running
from crawler.registry.client import RegistryClient
from crawler.registry.direct import DirectLine
from crawler.registry.endpoint import RegistryEndpoint
from crawler.registry.errors import RegistryUnavailable
from crawler.registry.oras_compat import OrasSession
from testkit.drip import DripServer
from testkit.registry import OCI_MANIFEST, build_manifest, package_annotations, sha256_digest

HANG_GUARD_S: Final = 30.0
CLOSE: Final = b""  # a step: read the request, close without answering


def ok(body: bytes = b"{}", *extra: bytes, content_type: str = "application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (content_type.encode(), len(body))
            + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body)


class Scripted:
    """Answers the n-th request (over all connections) with ``steps[n]``; a step ending in
    ``Connection: close`` or the ``CLOSE`` step ends that connection."""

    def __init__(self, *steps: bytes) -> None:
        self.steps = list(steps)
        self.heads: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # lets the accept loop see the stop flag
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="scripted")
        self._workers: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self.base = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> Scripted:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG_GUARD_S)
        self._listener.close()
        with self._lock:
            for conn in self._open:  # wakes a worker waiting for a request that never comes
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for worker in self._workers:
            worker.join(HANG_GUARD_S)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.append(conn)
            worker = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(HANG_GUARD_S)
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                with self._lock:
                    self.heads.append((number, head))
                    step = self.steps.pop(0) if self.steps else CLOSE
                if step == CLOSE:
                    return
                conn.sendall(step)
                if b"Connection: close" in step:
                    return


@pytest.fixture
def line() -> Iterator[list[DirectLine]]:
    made: list[DirectLine] = []
    yield made
    for each in made:
        each.close()


def direct(base: str, made: list[DirectLine], timeout_s: float = 30.0) -> DirectLine:
    made.append(DirectLine(base, timeout_s=timeout_s, verify=True, cert=None))
    return made[-1]


HEADERS: Final = {"Accept": "application/vnd.oci.image.manifest.v1+json", "User-Agent": "ua/1",
                  "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


def get(link: DirectLine, base: str, path: str = "/v2/r/manifests/1") -> requests.Response | None:
    return link.send("GET", base + path, HEADERS, 1 << 20)


def test_manifests_go_one_after_another_on_one_kept_connection(line: list[DirectLine]) -> None:
    with Scripted(ok(b'{"a":1}'), ok(b'{"b":2}'), ok(b'{"c":3}')) as server:
        link = direct(server.base, line)
        bodies = [get(link, server.base, f"/v2/r/manifests/{n}") for n in (1, 2, 3)]
    assert [b.content if b else None for b in bodies] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert server.connections == 1
    first = server.heads[0][1].split(b"\r\n")
    assert first[0] == b"GET /v2/r/manifests/1 HTTP/1.1"
    port = server.base.rsplit(":", 1)[1].encode()
    assert sorted(first[1:]) == sorted([b"Host: 127.0.0.1:" + port, b"Accept-Encoding: identity",
                                        b"Accept: " + HEADERS["Accept"].encode(), b"User-Agent: ua/1"])


def test_a_connection_the_registry_closed_while_idle_is_replaced(line: list[DirectLine]) -> None:
    with Scripted(ok(b"1", b"Connection: close"), ok(b"2")) as server:
        link = direct(server.base, line)
        assert (first := get(link, server.base)) is not None and first.content == b"1"
        assert (second := get(link, server.base)) is not None and second.content == b"2"
    assert server.connections == 2 and [n for n, _ in server.heads] == [1, 2]


def test_a_kept_connection_closed_instead_of_answering_is_tried_once_more(
    line: list[DirectLine],
) -> None:
    with Scripted(ok(b"1"), CLOSE, ok(b"2")) as server:
        link = direct(server.base, line)
        assert (first := get(link, server.base)) is not None and first.content == b"1"
        assert (second := get(link, server.base)) is not None and second.content == b"2"
    assert server.connections == 2 and [n for n, _ in server.heads] == [1, 1, 2]


def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_retry(
    line: list[DirectLine],
) -> None:
    with Scripted(CLOSE, ok()) as server:
        link = direct(server.base, line)
        with pytest.raises(requests.ConnectionError, match="without answering"):
            get(link, server.base)
    assert server.connections == 1 and len(server.heads) == 1


def test_an_answer_cut_short_is_an_error(line: list[DirectLine]) -> None:
    with Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nshort") as server:
        link = direct(server.base, line)
        with pytest.raises(requests.ConnectionError, match="before the end of its answer"):
            get(link, server.base)


def test_a_body_over_the_limit_is_cut_and_the_connection_dropped(line: list[DirectLine]) -> None:
    big = b"x" * 5000
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + big + b"\r\n0\r\n\r\n"
    with Scripted(chunked, ok(b"small")) as server:
        link = direct(server.base, line)
        cut = link.send("GET", server.base + "/v2/r/manifests/1", HEADERS, 100)
        after = get(link, server.base)
    assert cut is not None and len(cut.content) == 101
    assert after is not None and after.content == b"small" and server.connections == 2


def test_redirects_and_encoded_bodies_are_left_to_the_session(line: list[DirectLine]) -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    encoded = ok(gzip.compress(b"{}"), b"Content-Encoding: gzip")
    with Scripted(redirect, encoded) as server:
        link = direct(server.base, line)
        assert get(link, server.base) is None
        assert get(link, server.base) is None
    assert server.connections == 1  # both read to the end: the connection stays usable


def test_a_url_of_another_origin_is_left_to_the_session(line: list[DirectLine]) -> None:
    link = direct("http://127.0.0.1:9", line)
    assert link.send("GET", "http://127.0.0.2:9/v2/r/manifests/1", HEADERS, 100) is None


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent(
    line: list[DirectLine],
) -> None:
    with Scripted(ok()) as server:
        link = direct(server.base, line)
        with pytest.raises(requests.exceptions.InvalidHeader) as refused:
            link.send("GET", server.base + "/v2/r/manifests/1",
                      {"Authorization": "Bearer s3cret\r\nX-Evil: 1"}, 100)
    assert "s3cret" not in str(refused.value) and server.connections == 0


@pytest.fixture(params=["headers", "body"])
def drip(request: pytest.FixtureRequest) -> Iterator[DripServer]:
    with DripServer(phase=request.param) as server:
        yield server


def test_a_dripping_server_cannot_outlast_the_total_deadline(
    drip: DripServer, line: list[DirectLine],
) -> None:
    link = direct(f"http://{drip.host}", line, timeout_s=600.0)
    with request_deadline(0.5), pytest.raises(requests.Timeout, match=r"within 0\.5s"):
        get(link, f"http://{drip.host}")
    assert drip.closed_by_client.wait(HANG_GUARD_S), "the connection was left open"
    assert drip.requests == 1


def test_abort_stops_a_manifest_request_on_another_thread_at_once(
    drip: DripServer, line: list[DirectLine],
) -> None:
    link = direct(f"http://{drip.host}", line, timeout_s=600.0)
    handle = Call()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with running(handle), request_deadline(600.0):
                get(link, f"http://{drip.host}")
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert drip.wait_for_request(HANG_GUARD_S)
    handle.abort()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "abort did not stop the blocked request"
    assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError), errors
    assert "abandoned" in str(errors[0])
    assert drip.closed_by_client.wait(HANG_GUARD_S)


def test_an_aborted_call_sends_nothing(drip: DripServer, line: list[DirectLine]) -> None:
    link = direct(f"http://{drip.host}", line)
    handle = Call()
    handle.abort()
    with running(handle), pytest.raises(requests.ConnectionError, match="abandoned"):
        get(link, f"http://{drip.host}")
    assert drip.requests == 0


def manifest() -> bytes:
    return build_manifest(config=b"{}", config_media_type="application/vnd.akua.package.config.v1+json",
                          layer=b"layer", annotations=package_annotations({"type": "object"}, None))


def test_the_client_reads_a_manifest_the_session_must_decode(tmp_path: object) -> None:
    raw = manifest()
    encoded = ok(gzip.compress(raw), b"Content-Encoding: gzip",
                 b"Docker-Content-Digest: " + sha256_digest(raw).encode(), content_type=OCI_MANIFEST)
    with Scripted(encoded, encoded) as server:  # the line's try, then the session's
        host = server.base.removeprefix("http://")
        client = RegistryClient(RegistryEndpoint(host=host, plain_http=True))
        try:
            fetched = client.fetch_manifest("r", "1.0.0")
        finally:
            client.close()
    assert fetched.raw == raw and fetched.digest == sha256_digest(raw)
    assert [n for n, _ in server.heads] == [1, 2]  # the session opened its own connection
    assert b"Accept-Encoding: identity" in server.heads[0][1]


def test_the_client_reports_a_registry_that_closes_without_answering(tmp_path: object) -> None:
    with Scripted(CLOSE) as server:
        host = server.base.removeprefix("http://")
        client = RegistryClient(RegistryEndpoint(host=host, plain_http=True))
        try:
            with pytest.raises(RegistryUnavailable, match=r"cannot reach the registry.*without answering"):
                client.fetch_manifest("r", "1.0.0")
        finally:
            client.close()


def test_w13_the_line_sends_what_the_oras_path_sends_but_asks_for_identity() -> None:
    challenge = (b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"r\"\r\n"
                 b"Content-Length: 0\r\n\r\n")
    with Scripted(challenge, ok(), ok()) as server:
        endpoint = RegistryEndpoint(host=server.base.removeprefix("http://"), plain_http=True,
                                    username="u", password="p")
        session = OrasSession(endpoint)
        try:
            url = server.base + "/v2/r/manifests/1"
            assert session.send("GET", url, "application/json", stream=False).status_code == 200
            assert session.send("GET", url, "application/json", stream=False,
                                lean=True).status_code == 200
        finally:
            session.close()

    def lines(head: bytes) -> dict[bytes, bytes]:
        return dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])

    (_, oras_head), (_, lean_head) = server.heads[1], server.heads[2]
    assert oras_head.split(b"\r\n")[0] == lean_head.split(b"\r\n")[0]
    full, lean = lines(oras_head), lines(lean_head)
    assert lean.pop(b"Accept-Encoding") == b"identity" and b"gzip" in full.pop(b"Accept-Encoding")
    full.pop(b"Connection", None)  # HTTP/1.1 keeps connections without being asked
    assert lean == full and lean[b"Authorization"].startswith(b"Basic ")


class StrayAfterAnswer(Scripted):
    """Answers the first request, then, once the test says so, sends bytes nobody asked for."""

    def __init__(self, *steps: bytes) -> None:
        super().__init__(*steps)
        self.go = threading.Event()
        self.sent = threading.Event()

    def _serve(self, conn: socket.socket, number: int) -> None:
        if number == 1:
            conn.settimeout(HANG_GUARD_S)
            with conn:
                conn.recv(65536)
                with self._lock:
                    self.heads.append((number, b"first"))
                conn.sendall(ok(b"1"))
                if self.go.wait(HANG_GUARD_S):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
                self.sent.set()
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # until the client closes (or resets) it
            return
        super()._serve(conn, number)


def test_a_kept_connection_with_bytes_nobody_asked_for_is_not_used_again(
    line: list[DirectLine],
) -> None:
    with StrayAfterAnswer(ok(b"2")) as server:  # the step is the second connection's
        link = direct(server.base, line)
        assert (first := get(link, server.base)) is not None and first.content == b"1"
        server.go.set()
        assert server.sent.wait(HANG_GUARD_S)
        second = get(link, server.base)
    # Read as the answer, the stray bytes would have been taken for the second manifest.
    assert second is not None and second.content == b"2" and server.connections == 2


def test_a_head_answer_with_a_length_leaves_the_connection_ready_for_the_next_get(
    line: list[DirectLine],
) -> None:
    head = (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nDocker-Content-Digest: sha256:ab\r\n"
            b"Content-Type: application/json\r\n\r\n")
    with Scripted(head, ok(b'{"next":1}')) as server:
        link = direct(server.base, line)
        answer = link.send("HEAD", server.base + "/v2/r/manifests/1", HEADERS, 1 << 20)
        after = get(link, server.base)
    assert answer is not None and answer.content == b""
    assert answer.headers["Docker-Content-Digest"] == "sha256:ab"
    assert after is not None and after.content == b'{"next":1}' and server.connections == 1
